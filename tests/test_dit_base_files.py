"""A transformer base from one file (issue 21 §2), `--model FILE --config FOLDER`: the config is read
off the tensors (a file with fewer blocks than the folder's transformer still loads), the BFL layout
(`flux1-dev.safetensors`, `flux1-canny-dev.safetensors`, bare or under `model.diffusion_model.`) and
the diffusers one load to diffusers' very tensors, and `generate` samples what `FluxBase` /
`SD3Base` sample with that transformer. Bad or mismatched files are one line."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints.dit_base import load_base_transformer
from controlnet.checkpoints.io import save_safetensors
from controlnet.pipeline.flux import FluxBase
from controlnet.pipeline.sd3 import SD3Base
from dit_bases import FLUX, SD3, save_flux_base, save_sd3_base
from tiny_models import randomized

SIZES = {"flux": 64, "sd3": 8}


def to_bfl(state: dict) -> dict:
    """diffusers' Flux names -> BFL's (the inverse of diffusers' `convert_flux_transformer_checkpoint_to_diffusers`,
    written out here so that the test does not share the package's table)."""
    state, out = dict(state), {}
    names = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
             "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
             "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
             "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
             "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
             "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
             "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer"}
    double = {"norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin", "attn.to_out.0": "img_attn.proj",
              "attn.to_add_out": "txt_attn.proj", "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
              "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2"}
    norms = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
             "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm"}
    for p in ("weight", "bias"):
        for d, b in names.items():
            out[f"{b}.{p}"] = state.pop(f"{d}.{p}")
        shift_scale = state.pop(f"norm_out.linear.{p}").chunk(2)
        out[f"final_layer.adaLN_modulation.1.{p}"] = torch.cat([shift_scale[1], shift_scale[0]])
        for i in range(FLUX["num_layers"]):
            d = f"transformer_blocks.{i}."
            for k, v in double.items():
                out[f"double_blocks.{i}.{v}.{p}"] = state.pop(f"{d}{k}.{p}")
            out[f"double_blocks.{i}.img_attn.qkv.{p}"] = torch.cat([state.pop(f"{d}attn.to_{x}.{p}") for x in "qkv"])
            out[f"double_blocks.{i}.txt_attn.qkv.{p}"] = torch.cat([state.pop(f"{d}attn.add_{x}_proj.{p}") for x in "qkv"])
        for i in range(FLUX["num_single_layers"]):
            s = f"single_transformer_blocks.{i}."
            out[f"single_blocks.{i}.linear1.{p}"] = torch.cat([state.pop(f"{s}{n}.{p}") for n in
                                                               ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")])
            out[f"single_blocks.{i}.linear2.{p}"] = state.pop(f"{s}proj_out.{p}")
            out[f"single_blocks.{i}.modulation.lin.{p}"] = state.pop(f"{s}norm.linear.{p}")
    for i in range(FLUX["num_layers"]):
        for k, v in norms.items():
            out[f"double_blocks.{i}.{v}.scale"] = state.pop(f"transformer_blocks.{i}.{k}.weight")
    for i in range(FLUX["num_single_layers"]):
        out[f"single_blocks.{i}.norm.query_norm.scale"] = state.pop(f"single_transformer_blocks.{i}.attn.norm_q.weight")
        out[f"single_blocks.{i}.norm.key_norm.scale"] = state.pop(f"single_transformer_blocks.{i}.attn.norm_k.weight")
    assert not state, list(state)
    return out


def to_sai(state: dict, layers: int) -> dict:
    """diffusers' SD3 names -> Stability AI's (`joint_blocks`; the inverse of diffusers'
    `convert_sd3_transformer_checkpoint_to_diffusers`, written out here), under `model.diffusion_model.`."""
    state, out = dict(state), {}

    def swap(t):  # (scale, shift) <-> (shift, scale)
        a, b = t.chunk(2)
        return torch.cat([b, a])

    out["pos_embed"] = state.pop("pos_embed.pos_embed")
    names = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
             "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2", "context_embedder": "context_embedder",
             "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
             "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "proj_out": "final_layer.linear"}
    for p in ("weight", "bias"):
        for d, o in names.items():
            out[f"{o}.{p}"] = state.pop(f"{d}.{p}")
        out[f"final_layer.adaLN_modulation.1.{p}"] = swap(state.pop(f"norm_out.linear.{p}"))
        for i in range(layers):
            d, x, c, last = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block.", \
                i == layers - 1
            out[f"{x}attn.qkv.{p}"] = torch.cat([state.pop(f"{d}attn.to_{q}.{p}") for q in "qkv"])
            out[f"{c}attn.qkv.{p}"] = torch.cat([state.pop(f"{d}attn.add_{q}_proj.{p}") for q in "qkv"])
            out[f"{x}attn.proj.{p}"] = state.pop(f"{d}attn.to_out.0.{p}")
            out[f"{x}adaLN_modulation.1.{p}"] = state.pop(f"{d}norm1.linear.{p}")
            context_mod = state.pop(f"{d}norm1_context.linear.{p}")
            out[f"{c}adaLN_modulation.1.{p}"] = swap(context_mod) if last else context_mod
            out[f"{x}mlp.fc1.{p}"], out[f"{x}mlp.fc2.{p}"] = state.pop(f"{d}ff.net.0.proj.{p}"), state.pop(f"{d}ff.net.2.{p}")
            if not last:
                out[f"{c}attn.proj.{p}"] = state.pop(f"{d}attn.to_add_out.{p}")
                out[f"{c}mlp.fc1.{p}"] = state.pop(f"{d}ff_context.net.0.proj.{p}")
                out[f"{c}mlp.fc2.{p}"] = state.pop(f"{d}ff_context.net.2.{p}")
    for i in range(layers):
        for mine, theirs in (("norm_q", "x_block.attn.ln_q"), ("norm_k", "x_block.attn.ln_k"),
                             ("norm_added_q", "context_block.attn.ln_q"), ("norm_added_k", "context_block.attn.ln_k")):
            out[f"joint_blocks.{i}.{theirs}.weight"] = state.pop(f"transformer_blocks.{i}.attn.{mine}.weight")
    assert not state, list(state)
    return {f"model.diffusion_model.{k}": v for k, v in out.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Flux and SD3 folders, and transformer files unlike the folders' own (other seeds; the SD3 one
    with fewer blocks; a FLUX.1 Control one with a doubled input) in each layout."""
    root = tmp_path_factory.mktemp("basefiles")
    save_flux_base(root / "flux")
    save_sd3_base(root / "sd3")
    refs = {"flux": randomized(FluxTransformer2DModel(**FLUX), 21),
            "control": randomized(FluxTransformer2DModel(**dict(FLUX, in_channels=32, out_channels=16)), 22),
            "sd3": randomized(SD3Transformer2DModel(**dict(SD3, num_layers=2)), 23),
            "wide": FluxTransformer2DModel(**dict(FLUX, in_channels=64))}  # for a VAE of 16 latent channels
    for name, model in refs.items():
        save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}, root / f"{name}-diffusers.safetensors")
    save_safetensors(to_bfl(refs["flux"].state_dict()), root / "flux-bfl.safetensors")
    save_safetensors(to_sai(refs["sd3"].state_dict(), 2), root / "sd3-sai.safetensors")
    save_safetensors({f"model.diffusion_model.{k}": v for k, v in to_bfl(refs["control"].state_dict()).items()} |
                     {"text_encoders.clip_l.x": torch.zeros(1)}, root / "control-bfl.safetensors")
    rng = np.random.RandomState(0)
    for kind, size in SIZES.items():
        PIL.Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8)).save(root / f"hint-{kind}.png")
    (root / "out").mkdir()
    return root, refs


@pytest.mark.parametrize("file, ref, kind", [("flux-diffusers", "flux", "flux"), ("flux-bfl", "flux", "flux"),
                                             ("control-bfl", "control", "flux"), ("sd3-diffusers", "sd3", "sd3"),
                                             ("sd3-sai", "sd3", "sd3")])
def test_a_base_file_loads_to_diffusers_tensors_with_the_config_its_shapes_give(store, file, ref, kind):
    root, refs = store
    got = load_base_transformer(root / f"{file}.safetensors", kind)
    want = refs[ref]
    assert type(got) is type(want)
    for key in ("in_channels", "out_channels", "num_layers", "num_attention_heads", "attention_head_dim",
                "joint_attention_dim", "pooled_projection_dim"):
        assert got.config[key] == want.config[key], key
    mine, theirs = got.state_dict(), want.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)


def _run(root, capsys, argv) -> np.ndarray:
    code, out, err = run_cli(["generate", *argv, "--steps", "2", "--seed", "4", "-o", root / "out", "--no-grid"], capsys)
    assert code == 0, err
    return np.asarray(PIL.Image.open(out.strip().splitlines()[-1]).convert("RGB")), out.strip().splitlines()[-1]


def test_generate_with_a_bfl_file_and_a_flux_folder_equals_flux_base_and_replays(store, capsys):
    root, _ = store
    got, path = _run(root, capsys, ["--model", root / "flux-bfl.safetensors", "--config", root / "flux", "--prompt", "a cube",
                                    "--width", "64", "--height", "64"])
    base = FluxBase.from_pretrained(root / "flux", transformer=root / "flux-diffusers.safetensors")
    want = base("a cube", width=64, height=64, steps=2, generator=torch.Generator().manual_seed(4), output_type="pil")[0]
    assert np.array_equal(got, np.asarray(want))
    folder = FluxBase.from_pretrained(root / "flux")("a cube", width=64, height=64, steps=2, output_type="pil",
                                                     generator=torch.Generator().manual_seed(4))[0]
    assert not np.array_equal(got, np.asarray(folder))  # the file's transformer, not the folder's
    code, out, err = run_cli(["generate", "--from", path, "-o", root / "out", "--no-grid"], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(PIL.Image.open(out.strip().splitlines()[-1]).convert("RGB")), got)


def test_a_flux1_control_file_on_a_flux_folder_takes_the_control_image(store, capsys):
    root, _ = store
    hint = root / "hint-flux.png"
    got, _ = _run(root, capsys, ["--model", root / "control-bfl.safetensors", "--config", root / "flux",
                                 "--control-image", hint])
    base = FluxBase.from_pretrained(root / "flux", transformer=root / "control-diffusers.safetensors")
    want = base("", control_image=PIL.Image.open(hint), width=64, height=64, steps=2,
                generator=torch.Generator().manual_seed(4), output_type="pil")[0]
    assert np.array_equal(got, np.asarray(want))


def test_generate_with_an_sd3_file_equals_sd3_base(store, capsys):
    root, _ = store
    got, _ = _run(root, capsys, ["--model", root / "sd3-diffusers.safetensors", "--config", root / "sd3", "--prompt", "a",
                                 "--width", "8", "--height", "8"])
    base = SD3Base.from_pretrained(root / "sd3", transformer=root / "sd3-diffusers.safetensors")
    want = base("a", width=8, height=8, steps=2, generator=torch.Generator().manual_seed(4), output_type="pil")[0]
    assert np.array_equal(got, np.asarray(want))


def _damaged(root, name: str) -> str:
    from safetensors.torch import load_file

    state = load_file(root / "flux-bfl.safetensors")
    if name == "missing":
        state.pop("double_blocks.1.img_attn.proj.weight")
    elif name == "linear1":
        state["single_blocks.0.linear1.weight"] = state["single_blocks.0.linear1.weight"][:40]
    path = root / f"damaged-{name}.safetensors"
    save_safetensors(state, path)
    return path


@pytest.mark.parametrize("model, config, fragments", [
    ("flux-bfl.safetensors", None, ("--config", "Flux diffusers folder")),
    ("flux-bfl.safetensors", "sd3", ("--config", "not a Flux")),
    ("sd3-diffusers.safetensors", "flux", ("--config", "not a SD3")),
    ("missing", "flux", ("damaged-missing", "transformer_blocks.1.attn.to_out.0.weight", "truncated")),
    ("linear1", "flux", ("damaged-linear1", "linear1")),
    ("wide-diffusers.safetensors", "flux", ("takes 64 packed latent channels", "VAE gives 16")),
])
def test_bad_or_mismatched_base_files_are_one_line(store, capsys, model, config, fragments):
    root, _ = store
    path = root / model if model.endswith(".safetensors") else _damaged(root, model)
    argv = ["generate", "--model", path, *(["--config", root / config] if config else []), "--steps", "1", "-o", root / "out"]
    err = assert_user_error(argv, capsys, *fragments)
    assert len(err.strip().splitlines()) == 1


def test_a_controlnet_or_a_control_lora_given_as_the_model_is_one_line(store, capsys, tmp_path):
    from controlnet.checkpoints.dit import save_dit_controlnet
    from controlnet.nn.dit_controlnet import FluxControlNet

    root, _ = store
    save_dit_controlnet(FluxControlNet(**dict(FLUX, num_layers=1, num_single_layers=0)), tmp_path / "net.safetensors")
    save_safetensors({"img_in.lora_A.weight": torch.zeros(4, 128), "img_in.lora_B.weight": torch.zeros(32, 4)},
                     tmp_path / "lora.safetensors")
    for name, fragments in (("net", ("Flux ControlNet", "--controlnet")), ("lora", ("FLUX.1 Control LoRA", "--control-lora FILE"))):
        err = assert_user_error(["generate", "--model", tmp_path / f"{name}.safetensors", "--config", root / "flux",
                                 "-o", root / "out"], capsys, *fragments)
        assert len(err.strip().splitlines()) == 1


def test_a_base_file_given_as_a_controlnet_says_where_it_goes(store, capsys):
    root, _ = store
    err = assert_user_error(["generate", "--model", root / "flux", "--controlnet", root / "flux-bfl.safetensors", "--image",
                             root / "hint-flux.png", "-o", root / "out"], capsys, "base transformer", "--model FILE --config")
    assert len(err.strip().splitlines()) == 1


def test_an_sd3_size_beyond_its_positional_grid_is_one_line(store, capsys):
    root, _ = store  # the tiny SD3 base's grid is 96 patches of 1 latent pixel (VAE scale 1): 96 px at most
    err = assert_user_error(["generate", "--model", root / "sd3", "--width", "104", "--height", "8", "--steps", "1",
                             "-o", root / "out"], capsys, "at most 96")
    assert len(err.strip().splitlines()) == 1


def test_serve_takes_transformer_bases_as_folders_only(store):
    from controlnet.errors import InputError
    from controlnet.web.dit_engine import open_engine

    root, _ = store
    with pytest.raises(InputError, match="serve takes a transformer base as a diffusers folder"):
        open_engine(str(root / "flux-bfl.safetensors"))
