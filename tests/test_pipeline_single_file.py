"""A single-file checkpoint in the original LDM layout loads like the diffusers folder it came from.

For each family a tiny pipeline is saved as a diffusers folder and written as one LDM-layout
`.safetensors` (tests/ldm_layout.py). The file is loaded with `config=` a copy of the folder
*without any weights*, so every weight must come from the file (diffusers can fall back to loading
a component it does not find in the file from the config folder; the test would then compare the
folder with itself).
"""

import shutil

import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from controlnet.pipeline import ControlPipeline, ControlUnit
from ldm_layout import write_ldm_checkpoint
from tiny_models import FAMILIES, random_hint, start_latents, tiny_controlnet, tiny_pipeline, tiny_text_config

W, H = 64, 48
SCHEDULER = {"sd1": "ddim", "sd2": "ddim", "sdxl": "euler"}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _pipeline(family):
    pipe = tiny_pipeline(family)
    if family == "sdxl":
        # diffusers tells SDXL's two text encoders in a single file apart by their widths (768 vs
        # 1280 in the real model); tiny_pipeline gives both 32, so the second would be loaded from
        # the first's weights. Widths 16 + 48 keep the U-Net's cross-attention width of 64.
        torch.manual_seed(3)
        te = CLIPTextModel(tiny_text_config(16)).eval()
        te2 = CLIPTextModelWithProjection(tiny_text_config(48, projection_dim=32, hidden_act="gelu")).eval()
        pipe.register_modules(text_encoder=te, text_encoder_2=te2)
    return pipe


@pytest.fixture(scope="module", params=FAMILIES)
def saved(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(family)
    pipe = _pipeline(family)
    pipe.save_pretrained(root / "folder")
    config = root / "config"  # configs and tokenizers only
    shutil.copytree(root / "folder", config, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    write_ldm_checkpoint(pipe, root / "model.safetensors", open_clip=family == "sd2")
    from_file = ControlPipeline.from_pretrained(root / "model.safetensors", config=config)
    from_folder = ControlPipeline.from_pretrained(root / "folder")
    return family, pipe, from_file, from_folder, root / "model.safetensors"


def test_file_holds_the_ldm_layout(saved):
    from safetensors import safe_open

    family, *_, file = saved
    with safe_open(str(file), "pt") as f:
        prefixes = {".".join(k.split(".")[:3 if k.startswith("conditioner") else 2]) for k in f.keys()}
    text = {"sd1": {"cond_stage_model.transformer"}, "sd2": {"cond_stage_model.model"},
            "sdxl": {"conditioner.embedders.0", "conditioner.embedders.1"}}[family]
    assert prefixes == {"model.diffusion_model", "first_stage_model.encoder", "first_stage_model.decoder",
                        "first_stage_model.quant_conv", "first_stage_model.post_quant_conv", "betas", "alphas_cumprod"} | text


def test_every_weight_equals_the_folders(saved):
    family, _, from_file, from_folder, _ = saved
    assert from_file.kind == from_folder.kind == ("sdxl" if family == "sdxl" else "sd")
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for name in names:
        a, b = getattr(from_file, name).state_dict(), getattr(from_folder, name).state_dict()
        assert a.keys() == b.keys(), name
        for key in b:
            assert a[key].dtype == b[key].dtype == torch.float32, f"{name}.{key}"
            assert torch.equal(a[key], b[key]), f"{name}.{key}"
    assert from_file.scheduler.config.prediction_type == from_folder.scheduler.config.prediction_type
    for name in names + ["scheduler"]:
        configs = [getattr(p, name).config for p in (from_file, from_folder)]
        configs = [{k: v for k, v in (c.to_dict() if hasattr(c, "to_dict") else c).items() if not k.startswith("_")} for c in configs]
        assert configs[0] == configs[1], name


def test_generation_equals_the_folders(saved):
    family, pipe, from_file, from_folder, _ = saved
    cn = tiny_controlnet(pipe)
    hint = random_hint(W, H)

    def generate(p, units):  # decoded pictures, so the VAE decoder is compared too
        return p("a red cube", units, negative_prompt="blurry", steps=2, guidance_scale=7.0, scheduler=SCHEDULER[family],
                 width=W, height=H, latents=start_latents(pipe, W, H), output_type="pt", progress=False).images

    units = [ControlUnit(cn, hint)]
    a, b = generate(from_file, units), generate(from_folder, units)
    assert a.shape == (1, 3, H, W)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    ref = generate(ControlPipeline.from_diffusers(pipe), units)  # and both equal the pipeline they were saved from
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=0)
    assert (a - generate(from_file, [])).abs().max() > 1e-2  # the control is visible in the picture


def test_a_file_missing_weights_is_named_not_loaded_empty(saved, tmp_path):
    """diffusers leaves weights a file lacks empty (meta); each such file gets a CheckpointError."""
    from safetensors.torch import save_file

    from controlnet.errors import CheckpointError
    from ldm_layout import ldm_state_dict

    family, pipe, *_ = saved
    config = saved[-1].parent / "config"
    state = ldm_state_dict(pipe, open_clip=family == "sd2")
    text_key = next(k for k in state if "final_layer_norm.bias" in k or k.endswith("ln_final.bias"))
    for key in ("model.diffusion_model.out.2.bias", "first_stage_model.decoder.conv_out.bias", text_key):
        save_file({k: v.contiguous() for k, v in state.items() if k != key}, tmp_path / "partial.safetensors")
        with pytest.raises(CheckpointError, match=r"partial.safetensors lacks (1 \w+ )?weights"):
            ControlPipeline.from_pretrained(tmp_path / "partial.safetensors", config=config)
