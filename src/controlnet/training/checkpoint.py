"""Training checkpoints that survive being killed: written to a temporary folder and renamed into place.

`checkpoints/step-000500/` holds everything a resumed run needs: the ControlNet (diffusers layout),
the unlocked decoder if any, optimizer / LR scheduler / grad scaler state, every process's RNG
state and `state.json` (step, data position, counters, curves). A folder without its final name is
an interrupted write and is never read. Nothing here is unpickled beyond plain tensors and types
(`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from controlnet.errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d+)$")


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
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "state.json").is_file()]


def find_checkpoint(resume: str, output_dir: str | Path) -> Path | None:
    """`--resume latest` → the newest complete checkpoint of this output folder (None if there is none);
    a path → that checkpoint (or the newest inside a `checkpoints/` folder given instead)."""
    if resume == "latest":
        found = list_checkpoints(Path(output_dir) / "checkpoints")
        return found[-1] if found else None
    p = Path(resume)
    if (p / "state.json").is_file():
        return p
    found = list_checkpoints(p) or list_checkpoints(p / "checkpoints")
    if found:
        return found[-1]
    raise CheckpointError(f"{p} is not a training checkpoint (no state.json): pass a checkpoints/step-N folder, "
                          "the run's output folder, or --resume latest")


def save_checkpoint(root: str | Path, step: int, *, controlnet, optimizer, lr_scheduler, state: dict,
                    rng_states: list[dict], decoder: dict[str, torch.Tensor] | None = None,
                    scaler=None, keep: int = 3) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`. Main process only."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    controlnet.save_pretrained(tmp / "controlnet", safe_serialization=True)
    if decoder is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in decoder.items()}, str(tmp / "decoder.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    (tmp / "rng").mkdir()
    for rank, s in enumerate(rng_states):
        torch.save(s, tmp / "rng" / f"rank-{rank}.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.tmp-*"):  # left by killed runs
        shutil.rmtree(stale, ignore_errors=True)
    return final


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
