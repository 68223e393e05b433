"""The models shipped inside the package: the miniature Stable Diffusion and its ControlNets.

`--model mini` and `--controlnet mini:edges` name them on the command line; everything else is a
local path. Nothing is downloaded: if the weights are not in this installation, the error says how
to build them.
"""

from __future__ import annotations

from pathlib import Path

from controlnet.errors import MissingFileError

BUILTIN_DIR = Path(__file__).parent / "builtin_models"
MINI_DIR = BUILTIN_DIR / "mini"
MINI_CONDITIONS = ("edges", "seg", "depth", "inpaint")  # inpaint: the picture with -1 where to repaint
MINI_UNION = "union"  # one union ControlNet for edges, seg and depth (a control type per unit)
# the miniature Flux-shaped base (it shares mini's autoencoder and text encoder) and its ControlNets
MINI_DIT_DIR = BUILTIN_DIR / "mini-dit"
MINI_DIT_CONDITIONS = ("edges",)
HELD_OUT_SEED = 1  # world seed of the samples the miniature models never saw (training uses seed 0)


def _missing(what: str) -> MissingFileError:
    return MissingFileError(
        f"the built-in miniature {what} is not in this installation ({MINI_DIR}); build it with "
        "`controlnet world build-mini OUT` and copy OUT/model/* there, or give a local path instead"
    )


def mini_model_dir(root: Path | None = None) -> Path:
    root = Path(root) if root else MINI_DIR
    if not (root / "model_index.json").is_file():
        raise _missing("model") if root == MINI_DIR else MissingFileError(f"{root}: no model_index.json")
    return root


def mini_controlnet_dir(condition: str, root: Path | None = None) -> Path:
    if condition not in (*MINI_CONDITIONS, MINI_UNION):
        raise MissingFileError(f"no built-in ControlNet for {condition!r}; built-in: "
                               f"{', '.join((*MINI_CONDITIONS, MINI_UNION))}")
    folder = (Path(root) if root else MINI_DIR) / f"controlnet-{condition}"
    if not (folder / "config.json").is_file():
        raise _missing(f"{condition} ControlNet")
    return folder


def available_controlnets(root: Path | None = None, union: bool = False) -> list[str]:
    """The installed built-in ControlNets' conditions (and "union" when asked and installed)."""
    root = Path(root) if root else MINI_DIR
    names = (*MINI_CONDITIONS, MINI_UNION) if union else MINI_CONDITIONS
    return [c for c in names if (root / f"controlnet-{c}" / "config.json").is_file()]


def mini_dit_dir(condition: str | None = None) -> Path:
    """The built-in mini-dit base folder, or its ControlNet for `condition`."""
    if condition is not None and condition not in MINI_DIT_CONDITIONS:
        raise MissingFileError(f"no built-in mini-dit ControlNet for {condition!r}; built-in: "
                               f"{', '.join(f'mini-dit:{c}' for c in MINI_DIT_CONDITIONS)}")
    folder = MINI_DIT_DIR if condition is None else MINI_DIT_DIR / f"controlnet-{condition}"
    if not (folder / ("model_index.json" if condition is None else "config.json")).is_file():
        raise MissingFileError(f"the built-in mini-dit {'model' if condition is None else condition + ' ControlNet'} is "
                               f"not in this installation ({folder}); build it with `controlnet world build-mini-dit OUT` "
                               "and copy OUT/model/* there, or give a local path instead")
    return folder


def resolve_model(name: str) -> Path:
    """'mini' / 'mini-dit' → the packaged miniature models; anything else is a path."""
    if name == "mini":
        return mini_model_dir()
    if name == "mini-dit" and not Path(name).exists():
        return mini_dit_dir()
    if _names_a_builtin_controlnet(name):
        base = "mini-dit" if name.startswith("mini-dit:") else "mini"
        raise MissingFileError(f"{name!r} is a built-in ControlNet, not a base model; use --model {base} "
                               f"--controlnet {name}")
    return Path(name)


def resolve_controlnet(name: str) -> Path:
    """'mini:edges' (or 'mini-edges'), 'mini-dit:edges' → a packaged miniature ControlNet; anything else is a path."""
    if name.startswith("mini-dit:") and not Path(name).exists():
        return mini_dit_dir(name[len("mini-dit:"):])
    for prefix in ("mini:", "mini-"):
        if name.startswith(prefix) and not Path(name).exists():
            return mini_controlnet_dir(name[len(prefix):])
    if name == "mini" and not Path(name).exists():
        built_in = ", ".join(f"mini:{c}" for c in (*MINI_CONDITIONS, MINI_UNION))
        raise MissingFileError(f"'mini' is the built-in base model; name one of its ControlNets: {built_in}")
    return Path(name)


def _names_a_builtin_controlnet(name: str) -> bool:
    return not Path(name).exists() and (
        any(name == f"mini{sep}{c}" for sep in ":-" for c in (*MINI_CONDITIONS, MINI_UNION))
        or any(name == f"mini-dit:{c}" for c in MINI_DIT_CONDITIONS))
