"""Control modes: which CFG branches a unit acts on, and how strongly on each connection.

Residual i (connections ordered shallow -> deep, the last one the middle block) is multiplied by
`weight · s_i` and added on the branches the mode names:

| mode       | branches           | s_i                                                        |
|------------|--------------------|------------------------------------------------------------|
| balanced   | cond and uncond    | 1                                                          |
| prompt     | cond and uncond    | 0.825^(n−1−i)  ("My prompt is more important", A1111)      |
| control    | cond only          | 0.825^(n−1−i)  (original "guess mode"; A1111 "ControlNet is more important") |
| cfg_rw     | cond only          | 2^(l_i − L) = h_min / h_i  (paper §3.4, normalised; below) |

CFG Resolution Weighting. The paper weights connection i by `w_i = 64 / h_i`, h_i its side in
latent pixels at 512 px (64, 32, 16, 8), i.e. 1, 2, 4, 8 from shallow to deep. We use
`w_i = h_min / h_i = 2^(l_i − L)` (l_i the connection's downsampling level, L the deepest): the
paper's ratios divided by their maximum, so the middle block gets 1 and the 64×64 connections 1/8.
Why: (1) the ratios between resolutions are the paper's idea; the absolute 64 only names SD's
latent size at 512 px, and levels make it independent of image size and of the number of levels
(SDXL: 1/4, 1/2, 1); (2) literal 8× on deep residuals breaks images (lllyasviel/ControlNet#582)
and would make `weight` mean something else in this mode than in every other; normalised, the
deepest connection gets exactly `weight` as in guess mode, whose 0.825 decay (0.099 … 1) is the
released code's smooth version of the same profile (0.125 … 1).
"""

from __future__ import annotations

from controlnet.nn.connections import connections

MODES = ("balanced", "prompt", "control", "cfg_rw")
ALIASES = {
    "guess": "control",
    "guess_mode": "control",
    "controlnet": "control",
    "controlnet is more important": "control",
    "my prompt is more important": "prompt",
    "cfg-rw": "cfg_rw",
    "cfgrw": "cfg_rw",
    "cfg resolution weighting": "cfg_rw",
}
SOFT_BASE = 0.825  # the released code's "magic number"


def mode_name(mode: str) -> str:
    """The canonical mode for any accepted spelling (A1111's labels included)."""
    key = str(mode).strip().lower().replace("-", "_") if isinstance(mode, str) else None
    if key in MODES:
        return key
    if key is not None and (key in ALIASES or key.replace("_", " ") in ALIASES):
        return ALIASES.get(key) or ALIASES[key.replace("_", " ")]
    raise ValueError(f"unknown control mode {mode!r}; use one of {', '.join(MODES)}")


def cond_only(mode: str) -> bool:
    """Modes that leave the unconditional branch without control."""
    return mode in ("control", "cfg_rw")


def connection_levels(unet) -> list[int]:
    """Downsampling level (0 = latent resolution) of each connection, middle block last."""
    return [c.level for c in connections(unet.config)]


def mode_scales(mode: str, weight: float, levels: list[int]) -> list[float]:
    """Per-connection scales `weight · s_i` of a mode (table above)."""
    n = len(levels)
    if mode == "balanced":
        return [float(weight)] * n
    if mode in ("prompt", "control"):
        return [weight * SOFT_BASE ** (n - 1 - i) for i in range(n)]
    if mode == "cfg_rw":
        deepest = max(levels)
        return [weight * 2.0 ** (lvl - deepest) for lvl in levels]
    raise ValueError(f"unknown control mode {mode!r}")


def active(step: int, num_steps: int, start: float, end: float) -> bool:
    """Whether a unit acts at `step` of `num_steps`: the step's span [i/N, (i+1)/N] lies inside
    [start, end]. This is diffusers' `control_guidance_start/end` rule; `end=0` never acts."""
    return not (step / num_steps < start or (step + 1) / num_steps > end)
