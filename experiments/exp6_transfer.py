"""Experiment 6 (paper §4.5, Fig 12): a ControlNet moved onto a "community" fine-tune of its base.

The community model is the built-in base U-Net fine-tuned on a restyled world: every colour name
is drawn in another world colour (SWAP, pairs exchanged: red <-> green, ...), captions unchanged,
so "a red circle" is now painted green. The autoencoder and text encoder stay the base's (SD
fine-tunes mostly move the U-Net, the only part `controlnet transfer` touches). A permutation keeps
every colour inside what the autoencoder can draw, and makes the style exactly measurable: with
the perfect prompt, each pixel's nearest world colour is compared with the colour the restyled
scene puts there (community palette) and with the original scene's (base palette).

Then `controlnet transfer` moves the built-in edges ControlNet: control + (community - base) on
its copied encoder. Rows, each with the perfect prompt and with none: base without control, base +
edges (reference), community without control, community + the untransferred edges ControlNet, and
community + the transferred one. Edge F1 (2 px and exact) measures control, the palette
accuracies measure style (without a prompt every palette is equally likely: style is not defined).
Diagnostics (perfect prompt): the ControlNet alone reads the empty prompt, or the caption in the
base model's colour words, while the U-Net keeps the caption: is a lost control the ControlNet's
text pathway?

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp6_transfer.py   # ~26 min wall here
    .venv/bin/python experiments/exp6_transfer.py --tiny -o /tmp/exp6            # ~30 s
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "exp6_transfer"
# The restyle: colour pairs exchanged (an involution). Pairs of similar brightness where the palette
# allows, so outlines keep roughly their contrast; every one of the 12 names changes.
PAIRS = (("red", "green"), ("orange", "cyan"), ("yellow", "pink"), ("blue", "brown"), ("purple", "black"),
         ("gray", "white"))
SWAP = {**dict(PAIRS), **{b: a for a, b in PAIRS}}
# model, ControlNet (None, "edges": the built-in one, "transferred": moved by `controlnet transfer`)
ROWS = {"base": ("base", None), "base + edges": ("base", "edges"), "community": ("community", None),
        "community + untransferred": ("community", "edges"), "community + transferred": ("community", "transferred")}
# Diagnostics (perfect prompt): the ControlNet alone reads another text than the U-Net's prompt.
DIAGNOSTICS = {"base + edges, ControlNet reads no caption": ("base", "edges", "no caption"),
               "community + untransferred, ControlNet reads no caption": ("community", "edges", "no caption"),
               "community + transferred, ControlNet reads no caption": ("community", "transferred", "no caption"),
               "community + untransferred, ControlNet reads base-palette caption": ("community", "edges", "base-palette caption")}
TRUTH_ROWS = ("true pictures", "restyled true pictures")
METRICS = ("edge_f1", "edge_f1_exact", "community_palette_accuracy", "base_palette_accuracy",
           "community_adherence", "base_adherence")
GRID = 6  # samples in the figure


# --- the restyled world -------------------------------------------------------------------------

def restyle_scene(scene):
    """The same scene with every colour name exchanged by SWAP."""
    shapes = tuple(dataclasses.replace(s, colour=SWAP[s.colour]) for s in scene.shapes)
    return dataclasses.replace(scene, background=SWAP[scene.background], shapes=shapes)


def restyle(sample):
    """A world sample of the community's world: same layout, caption and condition maps; the picture
    is drawn from the restyled scene (its colours, and its texture tints, exchanged)."""
    from controlnet.world.render import picture

    scene = restyle_scene(sample.scene)
    return dataclasses.replace(sample, scene=scene, image=picture(scene, sample.labels))


# --- the community model: the base U-Net fine-tuned on restyled pictures --------------------------

class Finetune(NamedTuple):  # (not a dataclass: the tests load this script without registering it)
    steps: int = 1500
    batch: int = 32
    lr: float = 4e-4
    warmup: int = 50
    samples: int = 8000  # training world (seed 0) samples 0..samples-1, restyled, encoded once
    ema_decay: float = 0.998
    empty_caption_rate: float = 0.1  # as the base was trained: CFG keeps an unconditional model

    @classmethod
    def tiny(cls) -> Finetune:
        return cls(steps=3, batch=4, warmup=1, samples=8)

    def tag(self, base_hash: str) -> str:
        text = json.dumps({**self._asdict(), "base": base_hash, "swap": SWAP}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def community_model(work: Path, ft: Finetune, base_hash: str, log=print) -> tuple[Path, dict]:
    """The community model folder (trained here, or found from an earlier run) and its training report."""
    folder = work / f"community-{ft.tag(base_hash)}"
    model = folder / "model"
    if not (model / "model_index.json").is_file():
        t0, c0 = time.perf_counter(), time.process_time()
        from controlnet.files import write_json
        from controlnet.mini import pipeline as mini_pipeline

        pipe = _finetune(folder, ft)
        tmp = folder / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        mini_pipeline.save(pipe, tmp)  # fp16, as the built-in model
        os.replace(tmp, model)
        write_json(folder / "timing.json", {"wall_s": round(time.perf_counter() - t0, 1),
                                            "cpu_s": round(time.process_time() - c0, 1)})
        log(f"community model: {model}")
    report = json.loads((folder / "finetune" / "done.json").read_text())
    return model, {**report, **json.loads((folder / "timing.json").read_text()), "path": str(model)}


def _finetune(folder: Path, ft: Finetune):
    """Run (or resume) the fine-tune with the mini recipe's stage loop (checkpoints every 2 min);
    returns the pipeline with the fine-tuned (EMA) U-Net."""
    from controlnet.assets import mini_model_dir
    from controlnet.mini import pipeline as mini_pipeline
    from controlnet.mini.loop import Stage, load_final, run_stage

    pipe = mini_pipeline.load(mini_model_dir())
    pipe.text_encoder.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    cache = encode_restyled(pipe, ft.samples, folder / "latents.pt")
    stage = Stage("community", folder / "finetune", {"unet": pipe.unet}, _step_fn(pipe, cache, ft), ft.lr,
                  ft.steps, budget_s=1e12, warmup_steps=ft.warmup, ema_decay=ft.ema_decay, checkpoint_every_s=120)
    run_stage(stage, progress=sys.stderr.isatty())
    load_final(stage)
    pipe.unet.eval()
    return pipe


def _step_fn(pipe, cache: dict, ft: Finetune):
    """The base stage's loss (epsilon prediction, min-SNR weights), the text encoder frozen."""
    import torch
    import torch.nn.functional as F

    from controlnet.mini.base_stage import tokenize
    from controlnet.mini.config import MiniConfig
    from controlnet.mini.models import build_train_scheduler

    scheduler = build_train_scheduler()
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    weight = snr.clamp(max=MiniConfig().snr_gamma) / snr
    mean, std, ids = cache["mean"].float(), cache["std"].float(), cache["ids"].long()
    scale = float(pipe.vae.config.scaling_factor)  # the base's: the autoencoder is unchanged
    empty = tokenize(pipe.tokenizer, [""])[0]

    def step(i: int) -> dict:
        gen = torch.Generator().manual_seed(6_000_003 + i)
        idx = torch.randint(0, len(mean), (ft.batch,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        text = ids[idx].clone()
        text[torch.rand(ft.batch, generator=gen) < ft.empty_caption_rate] = empty
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (ft.batch,), generator=gen)
        with torch.no_grad():
            states = pipe.text_encoder(text)[0]
        pred = pipe.unet(scheduler.add_noise(z, noise, t), t, states).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        return {"loss": (weight[t] * per_sample).mean(), "mse": per_sample.mean()}

    return step


def encode_restyled(pipe, n: int, path: Path, batch: int = 64) -> dict:
    """Restyled training pictures (world seed 0, samples 0..n-1) encoded once: posterior mean and std."""
    import torch

    from controlnet.mini.base_stage import tokenize
    from controlnet.mini.checkpoint import atomic_save, load
    from controlnet.mini.vae_stage import images_to_tensor
    from controlnet.world import World

    if path.is_file():
        return load(path)
    world = World(seed=0, size=64, conditions=())
    means, stds, ids = [], [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            samples = [restyle(world[i]) for i in range(start, min(start + batch, n))]
            dist = pipe.vae.encode(images_to_tensor(np.stack([s.image for s in samples]))).latent_dist
            means.append(dist.mean.half())
            stds.append(dist.std.half())
            ids.append(tokenize(pipe.tokenizer, [s.caption for s in samples]))
    cache = {"mean": torch.cat(means), "std": torch.cat(stds), "ids": torch.cat(ids).to(torch.int16)}
    atomic_save(cache, path)
    return cache


# --- the transfer ----------------------------------------------------------------------------------

def transferred_controlnet(work: Path, community: Path) -> tuple[Path, dict]:
    """`controlnet transfer` of the built-in edges ControlNet from the built-in base to `community`
    (the CLI's own entry point, in this process)."""
    import contextlib
    import io

    from controlnet.assets import mini_controlnet_dir, mini_model_dir
    from controlnet.cli import main as cli
    from controlnet.files import write_json

    out = community.parent / "transferred-edges"
    if not (out / "config.json").is_file():
        t0 = time.perf_counter()
        argv = ["transfer", "--control", str(mini_controlnet_dir("edges")), "--base", str(mini_model_dir()),
                "--community", str(community), "-o", str(out), "--overwrite"]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            if cli(argv) != 0:
                raise RuntimeError(f"controlnet {' '.join(argv)} failed")
        write_json(out.parent / "transfer.json", {"stdout": printed.getvalue().strip(), "command": " ".join(argv),
                                                  "wall_s": round(time.perf_counter() - t0, 1)})
    return out, json.loads((out.parent / "transfer.json").read_text())


def transfer_offsets(control: Path, base: Path, community: Path, transferred: Path) -> dict:
    """How the transferred ControlNet differs from the input: on copied tensors by exactly
    (community - base) (in the stored dtype), elsewhere not at all."""
    import torch

    from controlnet.checkpoints import load_controlnet
    from controlnet.checkpoints.transfer import read_unet_encoder

    moved = load_controlnet(transferred)
    before, after, dtype = load_controlnet(control).state_dict(), moved.state_dict(), moved.loaded_from["dtype"]
    b, c = read_unet_encoder(base), read_unet_encoder(community)
    copied = [k for k in before if k in b]
    worst = max(float((after[k] - (before[k] + c[k].float() - b[k].float()).to(dtype).float()).abs().max())
                for k in copied)
    others = [k for k in before if k not in b]
    return {"copied_tensors": len(copied), "other_tensors": len(others),
            "max_abs_error_vs_offset": worst,
            "others_unchanged": all(torch.equal(before[k], after[k]) for k in others),
            "mean_abs_offset": float(np.mean([float((c[k].float() - b[k].float()).abs().mean()) for k in copied])),
            "changed_tensors": sum(not torch.equal(before[k], after[k]) for k in copied)}


# --- sampling and scores ---------------------------------------------------------------------------

def pictures(state, work: Path, row: str, prompt: str, args) -> list[np.ndarray]:
    """The n pictures of one row and prompt setting (cached)."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.evaluation.prompts import world_prompt
    from controlnet.pipeline import ControlPipeline, ControlUnit

    model, cn, text = (*ROWS[row], None) if row in ROWS else DIAGNOSTICS[row]
    if model not in state["pipes"]:
        state["pipes"][model] = ControlPipeline.from_pretrained(state["models"][model])
    items = state["items"]
    if cn and (cn, text) not in state["cns"]:
        state["cns"][cn, text] = load_controlnet(state["controlnets"][cn])
        if text:
            _controlnet_text(state["cns"][cn, text], state["pipes"][model], items, text, state)
    prompts = [world_prompt(prompt, it.scene) for it in items]

    def units(idx):
        state["run"] = idx  # the pictures of the next pipeline call (the ControlNet text override reads it)
        return [ControlUnit(state["cns"][cn, text], [items[i].conditions["edges"] for i in idx], weight=args.weight)] if cn else []

    key = {"model": state["hashes"][model], "controlnet": cn and state["hashes"][cn], "prompt": prompt,
           "steps": args.steps, "cfg": args.cfg, "weight": args.weight if cn else None}
    if text:
        key["controlnet_text"] = text
    return common.sample_cached(state["pipes"][model], work, key, prompts, units, list(range(len(items))),
                                args.steps, args.cfg)


def _controlnet_text(cn, pipe, items, text: str, state) -> None:
    """Diagnostic: the ControlNet (only; the U-Net keeps the prompt) reads another text in the
    conditional half of the CFG batch: the empty prompt, or the caption in the base model's colour
    words of what the community model is asked to paint (the restyled scene's caption)."""
    import torch

    from controlnet.world import caption

    words = {"no caption": ["" for _ in items], "base-palette caption": [caption(restyle_scene(it.scene)) for it in items]}[text]
    forward = cn.forward

    def patched(x, t, states, *a, **k):
        idx = state["run"]
        with torch.no_grad():
            cond = pipe.encode_prompt([words[i] for i in idx], ["" for _ in idx], False)[0]
        assert states.shape[0] == 2 * len(idx), "guided batches only: [uncond; cond]"
        return forward(x, t, torch.cat([states[: len(idx)], cond.to(states)]), *a, **k)

    cn.forward = patched


def picture_scores(image: np.ndarray, sample) -> dict[str, float]:
    """Control (edge F1 against the edges map) and style (which palette the colours follow)."""
    from controlnet.metrics.adherence import colour_check
    from controlnet.metrics.world import label_scores, world_scores

    base = world_scores("edges", image, sample)
    other = restyle(sample)
    return {"edge_f1": base["edge_f1"][0], "edge_f1_exact": base["edge_f1_exact"][0],
            "community_palette_accuracy": label_scores(image, other)[0],
            "base_palette_accuracy": base["label_accuracy"][0],
            "community_adherence": float(colour_check(image, other.scene)["ok"]),
            "base_adherence": base["prompt_adherence"][0]}


def score(images, items) -> dict:
    per = [picture_scores(img, it) for img, it in zip(images, items)]
    return {m: common.estimate([p[m] for p in per]) for m in METRICS}


def paired(state, work: Path, prompt: str, args) -> dict:
    """Transferred minus untransferred, picture by picture (same seeds, so the pairs share their noise):
    each measure's mean difference with its 95% interval, and how far the pictures differ at all."""
    a, b = (pictures(state, work, row, prompt, args) for row in ("community + transferred", "community + untransferred"))
    sa, sb = ([picture_scores(img, it) for img, it in zip(pics, state["items"])] for pics in (a, b))
    out = {m: common.estimate([x[m] - y[m] for x, y in zip(sa, sb)]) for m in METRICS}
    out["mean_abs_pixel_difference"] = common.estimate(
        [float(np.abs(x.astype(float) - y.astype(float)).mean()) for x, y in zip(a, b)])
    return out


# --- the run -----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--prompts", nargs="+", default=["perfect", "none"], choices=["perfect", "none"])
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--weight", type=float, default=1.0, help="ControlNet weight")
    p.add_argument("--finetune-steps", type=int, default=Finetune._field_defaults["steps"])
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    n = args.n or (2 if args.tiny else 48)
    if args.tiny:
        args.steps = 2
    ft = Finetune.tiny() if args.tiny else Finetune(steps=args.finetune_steps)
    weights = common.weights_id(("edges",))
    header = {"n": n, "steps": args.steps, "cfg": args.cfg, "weight": args.weight, "mode": "balanced",
              "prompts": args.prompts, "swap": SWAP, "finetune": ft._asdict(), "weights": weights}
    results = common.Results(out / f"{NAME}.json", header)
    state = prepare(results, work, ft, weights["sha256_16"], n)
    for prompt in args.prompts:
        for row in (*TRUTH_ROWS, *ROWS):
            key = f"{prompt}|{row}"
            if not results.done(key):
                t0, c0 = time.perf_counter(), time.process_time()
                pics = truth_pictures(state, row) if row in TRUTH_ROWS else pictures(state, work, row, prompt, args)
                results.put(key, {**score(pics, state["items"]), "wall_s": round(time.perf_counter() - t0, 1),
                                  "cpu_s": round(time.process_time() - c0, 1)})
                print(f"{key}: done", flush=True)
        if not results.done(f"{prompt}|transferred - untransferred"):
            results.put(f"{prompt}|transferred - untransferred", paired(state, work, prompt, args))
    for row in DIAGNOSTICS if "perfect" in args.prompts else ():
        if not results.done(f"perfect|{row}"):
            t0, c0 = time.perf_counter(), time.process_time()
            pics = pictures(state, work, row, "perfect", args)
            results.put(f"perfect|{row}", {**score(pics, state["items"]), "wall_s": round(time.perf_counter() - t0, 1),
                                           "cpu_s": round(time.process_time() - c0, 1)})
            print(f"perfect|{row}: done", flush=True)
    figure(results, state, work, args)
    print(table(results, args.prompts))
    return 0


def table(results, prompts) -> str:
    """The markdown table of docs/reproduction.md: every row's measures with their intervals."""
    def cell(rec) -> str:
        return f"{rec['value']:.3f} [{rec['ci_low']:.3f}, {rec['ci_high']:.3f}]"

    lines = ["| prompt | row | edge F1 (2 px) | edge F1 (exact) | community palette | base palette | adherence (community) |",
             "|---|---|---|---|---|---|---|"]
    for prompt in prompts:
        for row in (*TRUTH_ROWS, *ROWS, "transferred - untransferred", *(DIAGNOSTICS if prompt == "perfect" else ())):
            r = results.get(f"{prompt}|{row}")
            lines.append(f"| {prompt} | {row} | " + " | ".join(cell(r[m]) for m in (
                "edge_f1", "edge_f1_exact", "community_palette_accuracy", "base_palette_accuracy",
                "community_adherence")) + " |")
    return "\n".join(lines)


def prepare(results, work: Path, ft: Finetune, hashes: dict, n: int) -> dict:
    """Train (or find) the community model and the transferred ControlNet; record both in the results."""
    from controlnet.assets import mini_controlnet_dir, mini_model_dir

    model, report = community_model(work, ft, hashes["model"])
    transferred, transfer = transferred_controlnet(work, model)
    if not results.done("community"):
        results.put("community", {**report, "sha256_16": common.file_hash(model)})
    if not results.done("transfer"):
        offsets = transfer_offsets(mini_controlnet_dir("edges"), mini_model_dir(), model, transferred)
        results.put("transfer", {**transfer, **offsets, "sha256_16": common.file_hash(transferred)})
    return {"pipes": {}, "cns": {}, "items": common.world_items(n),
            "models": {"base": mini_model_dir(), "community": model},
            "controlnets": {"edges": mini_controlnet_dir("edges"), "transferred": transferred},
            "hashes": {"base": hashes["model"], "edges": hashes["controlnet-edges"],
                       "community": results.get("community")["sha256_16"],
                       "transferred": results.get("transfer")["sha256_16"]}}


def truth_pictures(state, row: str) -> list[np.ndarray]:
    items = state["items"]
    return [it.image for it in items] if row == "true pictures" else [restyle(it).image for it in items]


# --- the figure --------------------------------------------------------------------------------------

PANELS = (("edge_f1", "edge F1 (2 px)"), ("edge_f1_exact", "edge F1 (exact)"),
          ("community_palette_accuracy", "community-palette accuracy"), ("base_palette_accuracy", "base-palette accuracy"))
COLOURS = ["silver", "lightsteelblue", "grey", "tab:blue", "tab:orange", "tab:green", "tab:red", "cornflowerblue",
           "yellowgreen", "salmon", "tab:olive"]


def figure(results, state, work: Path, args) -> None:
    """Bars with 95% intervals (rows: prompt settings; panels: control and style measures) and a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controlnet.files import save_figure

    fig, axes = plt.subplots(len(args.prompts), len(PANELS), figsize=(4.2 * len(PANELS), 4.2 * len(args.prompts)),
                             squeeze=False)
    for r, prompt in enumerate(args.prompts):
        rows = [*TRUTH_ROWS, *ROWS, *(DIAGNOSTICS if prompt == "perfect" else ())]
        labels = [row.replace(", ControlNet reads ", "\n(ControlNet: ") + (")" if row in DIAGNOSTICS else "")
                  for row in rows]
        for c, (metric, title) in enumerate(PANELS):
            ax = axes[r][c]
            recs = [results.get(f"{prompt}|{row}")[metric] for row in rows]
            vals = [x["value"] for x in recs]
            err = [[v - x["ci_low"] for v, x in zip(vals, recs)], [x["ci_high"] - v for v, x in zip(vals, recs)]]
            ax.bar(range(len(rows)), vals, yerr=err, capsize=3, color=COLOURS[:len(rows)])
            ax.set_xticks(range(len(rows)), labels, rotation=40, fontsize=6, ha="right")
            ax.set_title(f"{title}\n(prompt: {prompt})", fontsize=8)
            ax.set_ylim(0, 1)
    fig.tight_layout()
    save_figure(fig, results.path.with_suffix(".png"))
    sample_grid(results, state, work, args)


def sample_grid(results, state, work: Path, args) -> None:
    """Per sample: condition | true picture | base + ControlNet | community uncontrolled | community +
    untransferred | community + transferred | the restyled true picture (perfect prompt)."""
    from controlnet.files import save_image
    from controlnet.world.grid import image_grid

    prompt = args.prompts[0]
    cols = ["base + edges", "community", "community + untransferred", "community + transferred"]
    pics = [pictures(state, work, row, prompt, args) for row in cols]
    items = state["items"]
    rows = [[common.rgb(it.conditions["edges"]), it.image, *[p[i] for p in pics], restyle(it).image]
            for i, it in enumerate(items[:GRID])]
    save_image(image_grid(rows, scale=3), results.path.with_name(f"{NAME}_samples.png"))


if __name__ == "__main__":
    sys.exit(main())
