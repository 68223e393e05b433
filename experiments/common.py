"""What every experiment script shares: its command line, where it writes, which weights it used,
its resumable results file, a picture cache for sampling with the Python API, and plotting helpers.

Real runs write `docs/reproduction/<name>.json` and `.png`; `--tiny` (seconds: the built-in model,
n=2, 2 steps, no FID) must be given `-o FOLDER` and refuses the real results folder. Pictures and
other bulky intermediates go to a work folder (`outputs/experiments/<name>` by default; `-o/work`
in tiny mode), so a rerun skips everything already computed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

from controlnet.errors import InputError
from controlnet.files import save_image, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "reproduction"
WORK = ROOT / "outputs" / "experiments"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-o", "--out", type=Path, default=None,
                   help=f"results folder (default {RESULTS.relative_to(ROOT)}; required with --tiny)")
    p.add_argument("--work", type=Path, default=None, help="cache folder for pictures and checkpoints")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (n=2, 2 steps, no FID)")
    p.add_argument("--n", type=int, default=None, help="samples per setting")
    return p


def add_arm_options(p: argparse.ArgumentParser, arms, what: str = "train this arm") -> None:
    """--arm (train one arm, then stop: arms can run in parallel) and --partial (evaluate what exists)."""
    p.add_argument("--arm", choices=list(arms), default=None, help=f"only {what}, then stop")
    p.add_argument("--partial", action="store_true",
                   help="train nothing: evaluate each unfinished arm's latest checkpoint (its step recorded)")


def paths(args, name: str) -> tuple[Path, Path]:
    """(results folder, work folder); tiny runs never write over the real results."""
    from controlnet.cli import quiet_libraries

    quiet_libraries()
    out = Path(args.out) if args.out is not None else None
    if args.tiny and (out is None or out.resolve() == RESULTS.resolve()):
        raise InputError("--tiny writes a smoke-test result: give -o FOLDER other than docs/reproduction")
    out = out or RESULTS
    work = Path(args.work) if args.work is not None else (out / "work" / name if args.tiny else WORK / name)
    return out, work


def run_cli(argv: list[str]) -> None:
    """Run a `controlnet` command in-process (as a user would type it); a failure ends the experiment
    with the command's exit code, after the command has printed its one-line error."""
    from controlnet.cli import main as cli

    code = cli(argv)
    if code != 0:
        raise SystemExit(code)


def export_complete(folder: Path) -> bool:
    """Whether `controlnet world export` finished writing `folder` (an interrupted export resumes)."""
    f = Path(folder) / "world.json"
    return f.is_file() and bool(json.loads(f.read_text()).get("complete"))


SETTINGS_FILES = ("recommended.json",)  # recommended sampling settings beside the weights: not weights


def file_hash(path: Path, skip_dirs: str | None = None) -> str:
    """sha256 (first 16 hex) of a file, or of a folder's files in name order (settings files aside,
    and subfolders whose name starts with `skip_dirs`)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else (
        p for p in path.rglob("*") if p.is_file() and p.name not in SETTINGS_FILES
        and not (skip_dirs and p.relative_to(path).parts[0].startswith(skip_dirs)))
    for f in sorted(files):
        h.update(f.relative_to(path.parent).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def weights_id(controlnets=("edges", "seg", "depth")) -> dict:
    """Which built-in weights a result used: hashes of the model and each ControlNet, and the commit."""
    from controlnet.assets import mini_controlnet_dir, mini_model_dir

    ids = {"model": file_hash(mini_model_dir(), skip_dirs="controlnet-")}  # the base model only
    ids.update({f"controlnet-{k}": file_hash(mini_controlnet_dir(k)) for k in controlnets})
    return {"commit": git_commit(), "sha256_16": ids}


class Results:
    """A JSON file of finished parts: `done(key)` says whether to skip, `put` saves atomically."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        same = _settings(old.get("header", {})) == _settings(header)  # the commit alone changes nothing
        self.data = {"header": old["header"] if same else header, "parts": old.get("parts", {}) if same else {},
                     "last_run_commit": git_commit()}

    def done(self, key: str) -> bool:
        return key in self.data["parts"]

    def get(self, key: str):
        return self.data["parts"][key]

    def put(self, key: str, value) -> None:
        self.data["parts"][key] = value
        self.save()

    def save(self) -> None:
        write_json(self.path, finite(self.data))


def _settings(header: dict) -> dict:
    """A header without the git commit: results stay valid across commits while weights and settings
    are the same (the header keeps the commit of the first run; `last_run_commit` the latest)."""
    weights = {k: v for k, v in header.get("weights", {}).items() if k != "commit"}
    return {**header, "weights": weights}


def finite(obj):
    """NaN/inf as None, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def estimate(values, weights=None) -> dict:
    """Mean with its 95% bootstrap interval, as a JSON record."""
    from controlnet.evaluation import mean_ci

    e = mean_ci(values, weights, 0.95)
    out = {"value": e.value, "ci_low": e.low, "ci_high": e.high, "n": e.n}
    if weights is not None and not np.sum(weights) > 0:
        out["note"] = "undefined: every weight is zero (e.g. no overlapping shape pairs to judge depth order)"
    return out


def world_items(n: int):
    """The held-out world samples the evaluation uses (world seed 1, from index 10,000)."""
    from controlnet.assets import HELD_OUT_SEED
    from controlnet.evaluation.data import WORLD_START
    from controlnet.world import World

    world = World(seed=HELD_OUT_SEED, size=64)
    return [world[WORLD_START + i] for i in range(n)]


def sample_cached(pipe, work: Path, key: dict, prompts: list[str], units_for, seeds: list[int], steps: int,
                  cfg: float, batch: int = 8) -> list[np.ndarray]:
    """Pictures for `seeds` (picture i uses seed i, as in `controlnet evaluate`), cached as PNGs under
    work/cache/<hash of key>/; `units_for(indices)` builds the ControlUnits for those pictures."""
    from controlnet.images import to_rgb8

    folder = work / "cache" / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    if not (folder / "key.json").is_file():
        write_json(folder / "key.json", key)
    todo = [i for i, s in enumerate(seeds) if not (folder / f"{s}.png").is_file()]
    for run in _runs(todo, seeds, batch):
        images = pipe([prompts[i] for i in run], units=units_for(run), steps=steps, guidance_scale=cfg,
                      seed=seeds[run[0]], width=64, height=64, output_type="np", progress=False).images
        for i, img in zip(run, images):
            save_image((np.asarray(img) * 255).round().clip(0, 255).astype(np.uint8), folder / f"{seeds[i]}.png")
    return [to_rgb8(folder / f"{s}.png") for s in seeds]


def _runs(todo: list[int], seeds: list[int], batch: int) -> list[list[int]]:
    """Indices in runs of consecutive seeds (a batch's picture k uses the first seed + k)."""
    runs: list[list[int]] = []
    for i in todo:
        if runs and seeds[runs[-1][-1]] == seeds[i] - 1 and len(runs[-1]) < batch:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def rgb(a) -> np.ndarray:
    """A condition map or picture as (H, W, 3) uint8."""
    a = np.asarray(a)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
