"""Control-LoRA (Stability AI): built from the base U-Net, `W = W_unet + up @ down` merged once.

References, on tiny random models:
- diffusers 0.42's own path, `ControlNetModel.from_unet(unet)` + `load_lora_adapter(sd, prefix=None)`
  (needs peft). It keeps the U-Net's biases of the factored layers and ignores the stored ones, so
  it is compared on files whose stored biases equal the base's;
- the format's semantics written out as tensor math on diffusers' `ControlNetModel` (ComfyUI's
  `ControlLora`: U-Net weights, plus up @ down, then every stored tensor in place), on any file.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ControlNetModel
from PIL import Image

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints import load_controlnet, original_to_ours, write_safetensors
from controlnet.tiny import random_control_lora, tiny_unet, unet_inputs
from tiny_models import random_hint, tiny_pipeline

FAMILIES_RANKS = [("sd1", 2), ("sd1", 8), ("sdxl", 4)]


def residuals_of(model, unet, seed: int = 0):
    sample, t, ehs, _, added = unet_inputs(unet, batch=2, size=8, seed=seed)
    hint = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        if isinstance(model, ControlNetModel):
            down, mid = model(sample, t, ehs, hint, added_cond_kwargs=added, return_dict=False)
            return [*down, mid]
        out = model(sample, t, ehs, hint, added_cond_kwargs=added)
        return [*out.down, out.mid]


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def explicit_reference(unet, file_tensors: dict) -> ControlNetModel:
    """ComfyUI's semantics by hand: U-Net weights, + up @ down per factored layer, stored tensors in place."""
    stored = original_to_ours({k: v for k, v in file_tensors.items() if k != "lora_controlnet"})
    hint = stored["controlnet_cond_embedding.conv_in.weight"]
    ref = ControlNetModel.from_unet(unet, conditioning_channels=hint.shape[1])
    state = ref.state_dict()
    for key in state:
        module = key.removesuffix(".weight")
        if f"{module}.up" in stored:
            up, down = stored[f"{module}.up"], stored[f"{module}.down"]
            state[key] = state[key] + torch.mm(up.flatten(1), down.flatten(1)).reshape(state[key].shape)
        elif key in stored:
            state[key] = stored[key]
    ref.load_state_dict(state, strict=True)
    return ref.eval()


@pytest.fixture
def saved(tmp_path):
    def save(family: str, rank: int, **kwargs):
        unet = tiny_unet(family)
        tensors = random_control_lora(unet, rank=rank, seed=3, **kwargs)
        path = tmp_path / f"control-lora-{family}-rank{rank}.safetensors"
        write_safetensors(tensors, path)
        return unet, tensors, path
    return save


@pytest.mark.parametrize("family,rank", FAMILIES_RANKS)
def test_equals_the_format_written_out_as_tensor_math(saved, family, rank):
    unet, tensors, path = saved(family, rank)
    ours = load_controlnet(path, base=unet)
    assert ours.loaded_from["layout"] == "control-lora"
    assert max_diff(residuals_of(ours, unet), residuals_of(explicit_reference(unet, tensors), unet)) <= 1e-4


@pytest.mark.parametrize("family,rank", FAMILIES_RANKS)
def test_equals_diffusers_load_lora_adapter(saved, family, rank):
    pytest.importorskip("peft", reason="diffusers' Control-LoRA path needs peft (the dev extra installs it)")
    unet, tensors, path = saved(family, rank, base_biases=True)
    reference = ControlNetModel.from_unet(unet)
    reference.load_lora_adapter(dict(tensors), prefix=None)
    ours = load_controlnet(path, base=unet)
    assert max_diff(residuals_of(ours, unet), residuals_of(reference.eval(), unet)) <= 1e-4


def test_diffusers_drops_stored_biases_of_factored_layers_we_keep_them(saved):
    """Why the file math is the reference for files with their own biases (see control_lora.py)."""
    pytest.importorskip("peft")
    unet, tensors, path = saved("sd1", 4)
    reference = ControlNetModel.from_unet(unet)
    reference.load_lora_adapter(dict(tensors), prefix=None)
    ours = load_controlnet(path, base=unet)
    assert max_diff(residuals_of(ours, unet), residuals_of(reference.eval(), unet)) > 1e-3
    assert torch.equal(ours.conv_in.bias, tensors["input_blocks.0.0.bias"])


def test_merged_once_at_load_a_plain_controlnet(tmp_path):
    """No factor survives loading: the result is an ordinary ControlNet with merged weights, and a
    tensor the file leaves out (a norm here) is the base's, copied."""
    unet = tiny_unet("sd1")
    tensors = random_control_lora(unet, rank=4)
    del tensors["input_blocks.1.0.in_layers.0.weight"]
    write_safetensors(tensors, tmp_path / "cl.safetensors")
    ours = load_controlnet(tmp_path / "cl.safetensors", base=unet)
    assert torch.equal(ours.down_blocks[0].resnets[0].norm1.weight, unet.down_blocks[0].resnets[0].norm1.weight)
    names = [n for n, _ in ours.named_parameters()]
    assert not any(n.endswith((".up", ".down")) or "lora" in n for n in names)
    base_storage = {p.data_ptr() for p in unet.parameters()}
    assert not any(p.data_ptr() in base_storage for p in ours.parameters())  # training it cannot touch the U-Net
    w = unet.conv_in.weight + (tensors["input_blocks.0.0.up"].flatten(1) @ tensors["input_blocks.0.0.down"].flatten(1)).reshape(32, 4, 3, 3)
    assert torch.allclose(ours.conv_in.weight, w, atol=1e-6)


# ------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("control_lora")
    pipe = tiny_pipeline("sd1")
    pipe.save_pretrained(d / "base")
    write_safetensors(random_control_lora(pipe.unet, rank=4, seed=5, std=0.1), d / "control-lora-canny-rank4.safetensors")
    tiny_pipeline("sdxl").save_pretrained(d / "base-xl")
    random_hint(64, 64, seed=1).save(d / "hint.png")
    return d


def test_inspect_names_the_family_and_rank(cli_files, capsys):
    code, out, err = run_cli(["inspect", cli_files / "control-lora-canny-rank4.safetensors", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert (info["family"], info["layout"], info["rank"]) == ("control-lora", "control-lora", "4")
    assert "cross-attention width 32" in info["made_for"]


def test_generate_equals_the_converted_plain_controlnet(cli_files, tmp_path, capsys):
    """generate takes the Control-LoRA with --model as its base; convert --base writes a plain ControlNet
    that reloads without a base and gives the same picture."""
    lora = cli_files / "control-lora-canny-rank4.safetensors"
    code, _, err = run_cli(["convert", lora, tmp_path / "plain", "--to", "diffusers", "--base", cli_files / "base"], capsys)
    assert code == 0, err
    plain = load_controlnet(tmp_path / "plain")
    assert plain.loaded_from["layout"] == "diffusers-folder"
    common = ["generate", "--model", cli_files / "base", "--prompt", "a house", "--steps", "2", "--seed", "1",
              "--width", "64", "--height", "64", "--image", cli_files / "hint.png"]
    pictures = []
    for i, net in enumerate((lora, tmp_path / "plain")):
        out = tmp_path / f"out{i}"
        code, _, err = run_cli([*common[:-2], "--controlnet", net, *common[-2:], "-o", out], capsys)
        assert code == 0, err
        pictures.append(Image.open(out / "00000-1.png").tobytes())
    assert pictures[0] == pictures[1]


# ------------------------------------------------------------------ bad files


def test_without_a_base_the_error_says_how_to_give_one(cli_files, tmp_path, capsys):
    lora = cli_files / "control-lora-canny-rank4.safetensors"
    with pytest.raises(ValueError, match="base"):
        load_controlnet(lora)
    assert_user_error(["convert", lora, tmp_path / "x", "--to", "diffusers"], capsys, str(lora), "Control-LoRA", "--base")


def test_base_given_for_a_file_that_is_not_a_control_lora_is_refused(tmp_path, capsys):
    """`convert --base` on a plain ControlNet was silently ignored; nothing is written."""
    from controlnet.assets import mini_controlnet_dir

    plain = mini_controlnet_dir("edges")
    assert_user_error(["convert", plain, tmp_path / "x", "--to", "diffusers", "--base", tmp_path / "nowhere"], capsys,
                      "--base", "Control-LoRA", "leave --base out")
    assert not (tmp_path / "x").exists()


def test_made_for_another_base_is_refused_naming_both(cli_files, tmp_path, capsys):
    lora = cli_files / "control-lora-canny-rank4.safetensors"
    assert_user_error(["generate", "--model", cli_files / "base-xl", "--prompt", "x", "--steps", "1", "--width", "64",
                       "--height", "64", "--controlnet", lora, "--image", cli_files / "hint.png", "-o", tmp_path],
                      capsys, str(lora), "made for a custom (cross-attention width 32)", "sdxl-like (cross-attention width 64)")


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated"),
    ("drop_down", "unpaired"),
    ("misshape", "factors"),
    ("drop_hint", "hint encoder"),
])
def test_damaged_files_get_one_line_errors(cli_files, tmp_path, capsys, damage, message):
    unet = tiny_unet("sd1")
    tensors = random_control_lora(unet, rank=4)
    path = tmp_path / "control-lora.safetensors"
    if damage == "drop_down":
        del tensors["input_blocks.1.0.in_layers.2.down"]
    elif damage == "misshape":
        tensors["input_blocks.1.0.in_layers.2.up"] = torch.zeros(16, 4, 1, 1)
    elif damage == "drop_hint":
        tensors = {k: v for k, v in tensors.items() if not k.startswith("input_hint_block")}
    write_safetensors(tensors, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1000])
    assert_user_error(["convert", path, tmp_path / "out", "--to", "diffusers", "--base", cli_files / "base"],
                      capsys, str(path), message)
    assert not (tmp_path / "out").exists()
