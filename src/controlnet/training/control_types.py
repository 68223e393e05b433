"""Union training: one network for several condition kinds, a control type per training sample.

The type is a column of the data, `control_type` (a metadata.jsonl key, a datasets/parquet column,
a WebDataset `control_type` entry or a key of its .json): any name of `controlnet.nn.union`'s types
(canny, depth, seg, ... and A1111's names; `edges` for the built-in world's outlines) or an index.
Several single-condition folders become one union dataset by giving each row its type and passing
them all to `--data`; `controlnet world export` writes the column (its condition's name).
"""

from __future__ import annotations

import torch

from controlnet.errors import InputError

COLUMN = "control_type"
XINSIR_TYPES, PROMAX_TYPES = 6, 8  # type slots of a union trained from the U-Net: 8 once tile or repaint is used


def scan_types(dataset) -> dict[str, int]:
    """{type name in the data: its index}, read from every record's column before step 1 (no image decoded):
    a sample without a type, or with an unknown one, is refused here rather than at its step."""
    from controlnet.nn.union import control_type_index

    found: dict[str, int] = {}
    for i in range(len(dataset)):
        name = dataset.control_type(i)
        if name is None:
            raise InputError(f"training sample {i} ({dataset.where(i)}) has no {COLUMN}: a union ControlNet trains on "
                             f"a {COLUMN} per sample (e.g. canny, depth, seg); add the column, or leave --union out")
        key = str(name)
        if key not in found:
            found[key] = control_type_index(name, PROMAX_TYPES, f"{COLUMN} of training sample {i} ({dataset.where(i)})")
    return found


def type_slots(found: dict[str, int]) -> int:
    """How many type slots a union trained from the U-Net gets: xinsir's 6, or ProMax's 8 for tile/repaint."""
    return PROMAX_TYPES if any(i >= XINSIR_TYPES for i in found.values()) else XINSIR_TYPES


def check_fit(found: dict[str, int], num_control_type: int, controlnet: str) -> None:
    """A union --controlnet with fewer type slots than the data uses is refused before step 1."""
    from controlnet.nn.union import control_type_index

    for name in found:
        control_type_index(name, num_control_type, f"--controlnet {controlnet}: the data's {COLUMN}")


def batch_types(names: list, num_control_type: int) -> torch.Tensor:
    """The batch's type indices (streamed data is checked here, sample by sample)."""
    from controlnet.nn.union import control_type_index

    if any(n is None for n in names):
        raise InputError(f"a training sample has no {COLUMN}: a union ControlNet trains on a {COLUMN} per sample")
    return torch.tensor([control_type_index(n, num_control_type, f"{COLUMN} of a training sample") for n in names])
