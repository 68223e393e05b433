"""The weight-file contract every learned detector that reads one published .pth/.pt file keeps: a missing file
is named with its place and where it is published; a truncated file, another detector's file under its name, a
pickle that would run code on load and a file that only partly matches are each refused in one clear error, so a
detector never runs with partly random weights. One table entry per file; every module reading it is checked.
Detector-specific refusals (sibling files, renamed keys, transformers folders) stay in test_annotators_*.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from bad_weight_files import IMAGE, refuses_pickle, refuses_truncated
from controlnet.annotators import annotate
from controlnet.annotators.registry import REGISTRY
from controlnet.errors import InputError, MissingFileError


def network(module: str, builder: str = "_build", *args):
    """Our module as the detector's loader builds it; its state dict has the published file's names."""

    def build():
        import importlib

        return getattr(importlib.import_module(f"controlnet.annotators.{module}"), builder)(*args)

    return build


@dataclass(frozen=True)
class Contract:
    file: str
    family: str  # the words after "not a" in its refusals
    published: str  # what the missing-file message says after the file name: the A1111 subfolder, where it is published
    build: Callable | None = None  # the network its tensors load into as they are; None: the file is converted first
    wrap: str | None = None  # the key the published file nests its tensors under


CONTRACTS = [
    Contract("ControlNetHED.pth", "HED", r"hed/.*lllyasviel/Annotators", network("hed")),
    Contract("sk_model.pth", "lineart", r"lineart/.*lllyasviel/Annotators", network("lineart")),
    Contract("sk_model2.pth", "lineart", r"lineart/.*lllyasviel/Annotators", network("lineart")),
    Contract("table5_pidinet.pth", "PiDiNet", r"pidinet/.*lllyasviel/Annotators", network("pidinet"), "state_dict"),
    Contract("mlsd_large_512_fp32.pth", "M-LSD", r"mlsd/.*lllyasviel/Annotators", network("lines", "_build_large")),
    Contract("body_pose_model.pth", "body pose", r"openpose/.*lllyasviel/Annotators",
             network("openpose_network", "BodyPoseNet")),
    Contract("7_model.pth", "TEED", r"TEED/.*qinglong_controlnet-lllite", network("teed")),
    Contract("MTEED.pth", "TEED", r"TEED/.*TheMistoAI/MistoLine", network("teed")),
    Contract("netG.pth", "anime lineart", r"lineart_anime/.*lllyasviel/Annotators", network("lineart_anime")),
    Contract("erika.pth", "manga line", r"manga_line/.*lllyasviel/Annotators", network("manga_line")),
    Contract("scannet.pt", "NormalBAE", r"normal_bae/.*lllyasviel/Annotators", network("normal_bae"), "model"),
    Contract("dpt_hybrid-midas-501f0c75.pt", "MiDaS", r"midas/.*lllyasviel/Annotators"),
    Contract("ZoeD_M12_N.pt", "ZoeDepth", r"zoedepth/.*lllyasviel/Annotators", wrap="model"),
    Contract("res101.pth", "LeReS depth", r"leres/.*lllyasviel/Annotators", wrap="depth_model"),
    Contract("upernet_global_small.pth", "UniFormer UperNet", r"uniformer/.*lllyasviel/Annotators", wrap="state_dict"),
    Contract("depth_anything_v2_vits.pth", "Depth Anything V2", r"depth_anything_v2/.*Apache-2\.0.*CC-BY-NC-4\.0"),
]
# (module, contract) for every registered module whose first published file is the contract's
READERS = [(name, c) for c in CONTRACTS for name, a in REGISTRY.items() if a.weights[:1] == (c.file,)]
FIRST = [pytest.param(next(n for n, c2 in READERS if c2 is c), c, id=c.file) for c in CONTRACTS]


def test_every_detector_reading_a_published_weight_file_keeps_the_contract():
    files = {a.weights[0] for a in REGISTRY.values() if a.weights and a.weights[0].endswith((".pth", ".pt"))}
    assert files == {c.file for c in CONTRACTS}, "a new detector's file: add a Contract entry"


@pytest.mark.parametrize("module,contract", FIRST)
def test_missing_file_is_named_with_its_place_and_where_it_is_published(tmp_path, module, contract):
    with pytest.raises(MissingFileError, match=re.escape(contract.file) + ".*" + contract.published):
        annotate(module, IMAGE, model=tmp_path)


@pytest.mark.parametrize("module,contract", FIRST)
def test_truncated_file_is_refused(tmp_path, module, contract):
    whole = tmp_path / "whole.pth"  # the zip is cut before its directory: unreadable whatever tensors it held
    torch.save({"weight": torch.zeros(50_000)}, whole)
    refuses_truncated(module, whole, tmp_path / contract.file, keep=100_000)


@pytest.mark.parametrize("module,contract", [pytest.param(n, c, id=n) for n, c in READERS])
def test_another_detectors_file_under_its_name_is_refused(tmp_path, module, contract):
    other = "teed" if contract.file == "ControlNetHED.pth" else "hed"
    torch.save(network(other)().state_dict(), tmp_path / contract.file)
    with pytest.raises(InputError, match=f"not a {contract.family}"):
        annotate(module, IMAGE, model=tmp_path)


@pytest.mark.parametrize("module,contract", FIRST)
def test_pickle_that_would_run_code_is_not_unpickled(tmp_path, module, contract):
    refuses_pickle(module, tmp_path / contract.file, wrap=contract.wrap)


@pytest.mark.parametrize("change", ["drop", "extra", "reshape"])
@pytest.mark.parametrize("module,contract", [p for p in FIRST if p.values[1].build])
def test_file_that_only_partly_matches_is_refused(tmp_path, module, contract, change):
    """The published names with one tensor missing, one extra or one resized (zeros broadcast from one value: a
    small file of the real shapes); the loaders' own names, so the message names the key."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in contract.build().state_dict().items()}
    state = {k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    first = next(k for k, s in shapes.items() if len(s))
    if change == "drop":
        del state[first]
    elif change == "extra":
        state["extra.weight"] = torch.zeros(2)
    else:
        state[first] = torch.zeros(shapes[first][0] + 1)
    torch.save({contract.wrap: state} if contract.wrap else state, tmp_path / contract.file)
    words = {"drop": rf"missing 1 keys \({re.escape(first)}\)", "extra": r"unexpected 1 \(extra\.weight\)",
             "reshape": "size mismatch"}[change]
    with pytest.raises(InputError, match=f"not a {contract.family}.*{words}"):
        annotate(module, IMAGE, model=tmp_path)
