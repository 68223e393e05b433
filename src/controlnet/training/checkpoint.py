"""Training checkpoints that survive being killed: written to a temporary folder and renamed into place.

`checkpoints/step-000500/` holds everything a resumed run needs: the ControlNet (diffusers layout),
the unlocked decoder if any, optimizer / LR scheduler / grad scaler state, every process's RNG
state and `state.json` (step, data position, counters, curves). A folder without its final name is
an interrupted write and is never read. Nothing here is unpickled beyond plain tensors and types
(`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from controlnet.errors import CheckpointError
from controlnet.files import atomic_file, write_text

STEP_DIR = re.compile(r"^step-(\d+)$", re.ASCII)  # not "step-٣": one folder per step number
WEIGHTS = "controlnet/diffusion_pytorch_model.safetensors"


def rng_state() -> dict:
    """This process's RNG states as tensors and plain types (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoints under `root` that were written to the end (a `state.json`), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "state.json").is_file()]


def problem(ckpt: Path) -> str | None:
    """What makes checkpoint `ckpt` unusable (a file missing or cut short), or None when it is complete.

    Safetensors files must be as long as their header says; `.pt` files are zip archives, whose
    directory sits at the very end, so a truncated one is not a zip any more."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError) as exc:
        return f"state.json cannot be read ({exc})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return "state.json has no step"
    needed = ["controlnet/config.json", WEIGHTS, "optimizer.pt", "scheduler.pt"]
    for name in needed + [str(p.relative_to(ckpt)) for p in ckpt.glob("*.safetensors")]:
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if name.endswith(".safetensors") and not _whole_safetensors(f):
            return f"{name} is truncated"
        if name.endswith(".pt") and not zipfile.is_zipfile(f):
            return f"{name} is truncated"
    return None


def _whole_safetensors(path: Path) -> bool:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return False
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return False
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return size >= 8 + n + end


def newest_complete(root: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest complete checkpoint under `root` or None, [(skipped newer checkpoint, why), ...])."""
    skipped = []
    for ckpt in reversed(list_checkpoints(root)):
        why = problem(ckpt)
        if why is None:
            return ckpt, skipped
        skipped.append((ckpt, why))
    return None, skipped


def find_checkpoint(resume: str, output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(checkpoint to resume from, [(incomplete checkpoint skipped, why)]).

    `--resume latest` → the newest complete checkpoint of this output folder (None if there is no
    checkpoint at all; an error if there are some but none is complete); a checkpoint folder → that
    one (an error if incomplete); a run's folder or its `checkpoints/` → the newest complete inside."""
    p = Path(output_dir) / "checkpoints" if resume == "latest" else Path(resume)
    if resume != "latest" and (p / "state.json").is_file():
        why = problem(p)
        if why:
            raise CheckpointError(f"--resume {p}: the checkpoint is incomplete ({why}); pass an older one")
        return p, []
    if resume != "latest" and not list_checkpoints(p):
        p = p / "checkpoints"
    found, skipped = newest_complete(p)
    if found is None and skipped:
        raise CheckpointError(f"--resume {resume}: no complete checkpoint in {p} ("
                              + "; ".join(f"{c.name}: {why}" for c, why in skipped) + ")")
    if found is None and resume != "latest":
        raise CheckpointError(f"{resume} is not a training checkpoint (no state.json): pass a checkpoints/step-N "
                              "folder, the run's output folder, or --resume latest")
    return found, skipped


@contextlib.contextmanager
def os_errors(path: Path):
    """safetensors reports a failed write (a full disk) as SafetensorError("... (os error N)"): make it the
    OSError it is, so the user reads "disk full" rather than an internal error."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def save_model_folder(model, folder: Path) -> None:
    """`model.save_pretrained(folder)`, each file replacing its old version in one rename (files.atomic_file):
    a failure (full disk) leaves the previous files whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".save-", dir=folder))
    try:
        with os_errors(staging):
            model.save_pretrained(staging, safe_serialization=True)
        for f in sorted(staging.iterdir()):
            with atomic_file(folder / f.name) as tmp:
                os.replace(f, tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_checkpoint(root: str | Path, step: int, *, controlnet, optimizer, lr_scheduler, state: dict,
                    rng_states: list[dict], decoder: dict[str, torch.Tensor] | None = None,
                    scaler=None, keep: int = 3) -> Path:
    """Write checkpoint `step` into a temporary folder renamed into place, then delete all but the newest
    `keep`. Main process only. If writing fails (a full disk), the temporary folder is removed and the
    previous checkpoints are untouched."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_checkpoint(tmp, controlnet, optimizer, lr_scheduler, state, rng_states, decoder, scaler)
        if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.tmp-*"):  # left by killed runs
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _write_checkpoint(tmp: Path, controlnet, optimizer, lr_scheduler, state, rng_states, decoder, scaler) -> None:
    """Every file through files.atomic_file (flushed to disk); state.json last, as the mark of a whole checkpoint."""
    tmp.mkdir()
    save_model_folder(controlnet, tmp / "controlnet")
    if decoder is not None:
        with atomic_file(tmp / "decoder.safetensors") as f, os_errors(f):
            save_file({k: v.detach().cpu().contiguous() for k, v in decoder.items()}, str(f))
    tensors = {"optimizer.pt": optimizer.state_dict(), "scheduler.pt": lr_scheduler.state_dict()}
    if scaler is not None:
        tensors["scaler.pt"] = scaler.state_dict()
    tensors.update({f"rng/rank-{rank}.pt": s for rank, s in enumerate(rng_states)})
    for name, obj in tensors.items():
        with atomic_file(tmp / name) as f:
            torch.save(obj, f)
    write_text(tmp / "state.json", json.dumps(state, indent=1) + "\n")


def load_tensors(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{ckpt}/state.json cannot be read ({exc}); resume from an older checkpoint") from None


def load_decoder(ckpt: Path) -> dict[str, torch.Tensor] | None:
    f = ckpt / "decoder.safetensors"
    return load_file(str(f)) if f.is_file() else None
