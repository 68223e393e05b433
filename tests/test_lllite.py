"""ControlNet-LLLite (kohya-ss): our network, loader and U-Net hooks against stored reference numbers.

tests/data/lllite_reference.safetensors was made ONCE by tests/data/make_lllite_reference.py, which
runs kohya's sd-scripts `networks/control_net_lllite.py` at commit
48d368fa557731ad0488c07304dfeba8c07910eb (its `LLLiteModule`, hooked by its own `apply_to()` into
the tiny SDXL U-Net `controlnet.tiny.tiny_unet("sdxl")`, random weights from seed 1234, multiplier
0.7, hint fed as `2·hint − 1` like kohya's sdxl_gen_img) outside this package. It holds the LLLite
file's tensors (kohya's key names), the inputs (`ref.*`), the U-Net output without LLLite
(`ref.plain`) and with it (`ref.out`). Nothing from sd-scripts is imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints import load_controlnet
from controlnet.errors import CheckpointError
from controlnet.nn import lllite
from controlnet.tiny import tiny_unet

DATA = Path(__file__).parent / "data" / "lllite_reference.safetensors"
TOL = dict(atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def ref():
    return load_file(DATA)


@pytest.fixture
def lllite_file(ref, tmp_path):
    path = tmp_path / "controllllite_tiny.safetensors"
    save_file({k: v for k, v in ref.items() if k.startswith("lllite_unet_")}, path)
    return path


def _unet_out(unet, ref):
    added = {"text_embeds": ref["ref.text_embeds"], "time_ids": ref["ref.time_ids"]}
    return unet(ref["ref.sample"], ref["ref.timestep"][0], ref["ref.ehs"], added_cond_kwargs=added).sample


@torch.no_grad()
def test_matches_kohya_reference(ref, lllite_file):
    unet = tiny_unet("sdxl")
    torch.testing.assert_close(_unet_out(unet, ref), ref["ref.plain"], **TOL)  # the same base U-Net
    net = load_controlnet(lllite_file)
    assert lllite.is_lllite(net) and net.loaded_from["family"] == "controlnet-lllite"
    with lllite.applied(unet, [(net, net.embed_hint(ref["ref.hint"]), 0.7)]):
        out = _unet_out(unet, ref)
    torch.testing.assert_close(out, ref["ref.out"], **TOL)
    assert (out - ref["ref.plain"]).abs().max() > 0.05  # LLLite changes the output
    torch.testing.assert_close(_unet_out(unet, ref), ref["ref.plain"], **TOL)  # hooks removed afterwards


@torch.no_grad()
def test_two_units_add_from_the_same_input(ref, lllite_file):
    """Two units at 0.35 each equal one at 0.7: each module reads the projection's own x, not the other's sum."""
    unet, net = tiny_unet("sdxl"), load_controlnet(lllite_file)
    emb = net.embed_hint(ref["ref.hint"])
    with lllite.applied(unet, [(net, emb, 0.35), (net, emb, 0.35)]):
        out = _unet_out(unet, ref)
    torch.testing.assert_close(out, ref["ref.out"], **TOL)


def test_target_names_map_to_diffusers_modules():
    assert lllite.target_path("lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 2) == \
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert lllite.target_path("lllite_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_q", 2) == \
        "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_q"
    assert lllite.target_path("lllite_unet_middle_block_1_transformer_blocks_3_attn1_to_v", 2) == \
        "mid_block.attentions.0.transformer_blocks.3.attn1.to_v"
    assert lllite.target_path("lllite_unet_output_blocks_5_1_transformer_blocks_0_attn1_to_k", 2) == \
        "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_k"


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_depth_read_from_shapes(depth):
    module = lllite.LLLiteModule(depth, 8, 32, 4)
    state = {f"lllite_unet_middle_block_1_transformer_blocks_0_attn1_to_q.{k}": v for k, v in module.state_dict().items()}
    from controlnet.checkpoints.lllite import specs

    assert specs(state, "f") == {"lllite_unet_middle_block_1_transformer_blocks_0_attn1_to_q": (depth, 8, 32, 4)}
    assert module.embed(torch.zeros(1, 3, 64, 64)).shape[1] == (64 // {1: 8, 2: 16, 3: 32}[depth]) ** 2


def test_inspect_names_the_family(lllite_file, capsys):
    code, out, err = run_cli(["inspect", lllite_file, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "controlnet-lllite" and info["layout"] == "controlnet-lllite"
    assert info["modules"] == 20 and info["cond_emb_dim"] == 8 and info["mlp_dim"] == 4 and info["depths"] == "2"


def test_truncated_file_is_one_line(ref, tmp_path, capsys):
    state = {k: v for k, v in ref.items() if k.startswith("lllite_unet_") and not k.endswith("mid.0.weight")}
    save_file(state, tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_controlnet(tmp_path / "cut.safetensors")
    assert_user_error(["inspect", tmp_path / "cut.safetensors"], capsys, "truncated or damaged")


def test_wrong_shape_is_one_line(ref, tmp_path):
    state = {k: v for k, v in ref.items() if k.startswith("lllite_unet_")}
    key = next(k for k in state if k.endswith("up.0.weight"))
    state[key] = torch.zeros(5, 3)
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_controlnet(tmp_path / "bad.safetensors")


def test_bytes_cut_file_is_one_line(lllite_file, tmp_path, capsys):
    data = lllite_file.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    err = assert_user_error(["inspect", tmp_path / "half.safetensors"], capsys, "half.safetensors", "truncated")
    assert len(err.strip().splitlines()) == 1


@torch.no_grad()
def test_file_for_another_base_is_refused(ref, lllite_file):
    net = load_controlnet(lllite_file)
    unet = tiny_unet("sd1")  # no down_blocks.1 attentions
    with pytest.raises(ValueError, match="made for this base model"), \
            lllite.applied(unet, [(net, net.embed_hint(ref["ref.hint"]), 1.0)]):
        pass


SIZE = 64


@pytest.fixture(scope="module")
def sdxl():
    from tiny_models import tiny_pipeline

    return tiny_pipeline("sdxl")  # the same tiny SDXL U-Net shape the reference file was made for


def _latents(pipe, units, **kw):
    from tiny_models import our_latents

    return our_latents(pipe, units, steps=2, size=SIZE, **kw)


@torch.no_grad()
def test_sampling_unit_hooks_the_unet_every_step(sdxl, lllite_file):
    """A LLLite unit in the pipeline equals the plain pipeline run with our hooks held around it by hand
    (hint read at the output size, tiled over the CFG batch, the weight as multiplier)."""
    from controlnet.pipeline import ControlUnit
    from controlnet.pipeline.images import hint_tensor
    from tiny_models import random_hint

    net, image = load_controlnet(lllite_file), random_hint(SIZE, SIZE, seed=3)
    got = _latents(sdxl, [ControlUnit(net, image, weight=0.7, resize=None)])
    with lllite.applied(sdxl.unet, [(net, net.embed_hint(hint_tensor(image, SIZE, SIZE, None)), 0.7)]):
        by_hand = _latents(sdxl, [])
    torch.testing.assert_close(got, by_hand, **TOL)
    assert (got - _latents(sdxl, [])).abs().max() > 1e-3


@torch.no_grad()
def test_sampling_beside_an_ordinary_controlnet(sdxl, lllite_file):
    """Multi-unit: a LLLite unit and a ControlNet unit both act (the result differs from either alone)."""
    from controlnet.pipeline import ControlUnit
    from tiny_models import random_hint, tiny_controlnet

    net, cn, image = load_controlnet(lllite_file), tiny_controlnet(sdxl), random_hint(SIZE, SIZE, seed=3)
    both = _latents(sdxl, [ControlUnit(net, image, resize=None), ControlUnit(cn, image, resize=None)])
    for alone in ([ControlUnit(net, image, resize=None)], [ControlUnit(cn, image, resize=None)]):
        assert (both - _latents(sdxl, alone)).abs().max() > 1e-3


@torch.no_grad()
def test_sampling_refuses_a_file_for_another_base(lllite_file):
    from controlnet.errors import InputError
    from controlnet.pipeline import ControlUnit
    from tiny_models import random_hint, tiny_pipeline

    with pytest.raises(InputError, match="unit 1: the LLLite file targets .*made for this base model"):
        _latents(tiny_pipeline("sd1"), [ControlUnit(load_controlnet(lllite_file), random_hint(SIZE, SIZE), resize=None)])


def test_generate_command_with_lllite_beside_a_controlnet(sdxl, lllite_file, tmp_path, capsys):
    from tiny_models import random_hint, tiny_controlnet

    sdxl.save_pretrained(tmp_path / "base")
    tiny_controlnet(sdxl, seed=2).save_pretrained(tmp_path / "cn")
    random_hint(SIZE, SIZE, seed=1).save(tmp_path / "hint.png")
    common = ["generate", "--model", tmp_path / "base", "--prompt", "a house", "--steps", "2", "--seed", "1",
              "--width", SIZE, "--height", SIZE]
    cn_unit = ["--controlnet", tmp_path / "cn", "--image", tmp_path / "hint.png"]
    lllite_unit = ["--controlnet", lllite_file, "--image", tmp_path / "hint.png", "--weight", "0.8"]
    for i, units in enumerate((cn_unit, [*lllite_unit, *cn_unit])):
        code, _, err = run_cli([*common, *units, "-o", tmp_path / str(i)], capsys)
        assert code == 0, err
    assert (tmp_path / "1" / "00000-1.png").read_bytes() != (tmp_path / "0" / "00000-1.png").read_bytes()
