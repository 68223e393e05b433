"""The models shipped inside the package: the miniature Stable Diffusion and its ControlNets.

`--model mini` and `--controlnet mini:edges` name them on the command line; everything else is a
local path. Nothing is downloaded: if the weights are not in this installation, the error says how
to build them.
"""

from __future__ import annotations

from pathlib import Path

from controlnet.errors import MissingFileError

MINI_DIR = Path(__file__).parent / "builtin_models" / "mini"
MINI_CONDITIONS = ("edges", "seg", "depth", "inpaint")  # inpaint: the picture with -1 where to repaint
MINI_UNION = "union"  # one union ControlNet for edges, seg and depth (a control type per unit)
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


def resolve_model(name: str) -> Path:
    """'mini' → the packaged miniature model; anything else is a path."""
    if name == "mini":
        return mini_model_dir()
    if _names_a_builtin_controlnet(name):
        raise MissingFileError(f"{name!r} is a built-in ControlNet, not a base model; use --model mini "
                               f"--controlnet {name}")
    return Path(name)


def resolve_controlnet(name: str) -> Path:
    """'mini:edges' (or 'mini-edges') → a packaged miniature ControlNet; anything else is a path."""
    for prefix in ("mini:", "mini-"):
        if name.startswith(prefix) and not Path(name).exists():
            return mini_controlnet_dir(name[len(prefix):])
    if name == "mini" and not Path(name).exists():
        built_in = ", ".join(f"mini:{c}" for c in (*MINI_CONDITIONS, MINI_UNION))
        raise MissingFileError(f"'mini' is the built-in base model; name one of its ControlNets: {built_in}")
    return Path(name)


def _names_a_builtin_controlnet(name: str) -> bool:
    return not Path(name).exists() and any(name == f"mini{sep}{c}" for sep in ":-" for c in (*MINI_CONDITIONS, MINI_UNION))
