"""FLUX.1 Control LoRAs (Canny/Depth dev -lora) applied to a plain Flux base (issue 21 §1):
(a) a diffusers-layout file on a tiny random Flux gives the pictures of diffusers' `FluxControlPipeline`
after `load_lora_weights` (≤ 1e-4); (b) BFL's original layout, built with the real names at FLUX.1's
real width and block counts (rank-2 factors: diffusers' converter hard-codes 19/38 blocks of width 3072),
converts tensor for tensor as diffusers' `_convert_bfl_flux_control_lora_to_diffusers` converts it
(its one wrong tensor shown), and a tiny BFL file applies; (c) `generate --control-lora` equals the
API and replays; (d) the ways to get it wrong are one line each."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints.flux_control_lora import apply_flux_control_lora, bfl_to_diffusers
from controlnet.pipeline.flux import FluxBase, is_control_base
from dit_bases import save_flux_base, save_sd3_base

SIZE, RANK = 64, 2


def random_control_lora(transformer, rank: int = RANK, seed: int = 0, std: float = 0.1, wide: int = 2) -> dict:
    """Diffusers-layout factors (lora_B with a bias: peft's lora_bias) for every linear of `transformer`, the
    input layer `wide` times as wide, and its attention norm scales in full."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in transformer.named_modules():
        if isinstance(m, torch.nn.Linear):
            n_in = m.in_features * (wide if name == "x_embedder" else 1)
            out[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, n_in, generator=g) * std
            out[f"transformer.{name}.lora_B.weight"] = torch.randn(m.out_features, rank, generator=g) * std
            out[f"transformer.{name}.lora_B.bias"] = torch.randn(m.out_features, generator=g) * std
    for name, p in transformer.named_parameters():
        if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")):
            out[f"transformer.{name}"] = 1 + torch.randn(p.shape, generator=g) * std
    return out


def peft_metadata(lora: dict, alpha: float) -> dict:
    """The `lora_adapter_metadata` diffusers' save_lora_weights writes: the peft config, prefixed."""
    modules = sorted({k.split(".lora_")[0].removeprefix("transformer.") for k in lora if ".lora_" in k})
    config = {"r": RANK, "lora_alpha": alpha, "target_modules": modules, "lora_bias": True}
    return {"format": "pt", "lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()})}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A plain tiny Flux base, an SD3 base, a diffusers-layout Control LoRA for the Flux (alpha 2r in its
    metadata), a hint."""
    root = tmp_path_factory.mktemp("flux-control-lora")
    save_flux_base(root / "flux")
    save_sd3_base(root / "sd3")
    base = FluxBase.from_pretrained(root / "flux")
    lora = random_control_lora(base.transformer)
    save_file(lora, root / "lora.safetensors", metadata=peft_metadata(lora, alpha=2 * RANK))
    rng = np.random.RandomState(0)
    PIL.Image.fromarray((rng.rand(SIZE, SIZE, 3) * 255).astype(np.uint8)).save(root / "hint.png")
    (root / "out").mkdir()
    return root


COMMON = dict(height=SIZE, width=SIZE, guidance_scale=3.5, max_sequence_length=16)


def test_a_diffusers_layout_lora_equals_flux_control_pipeline_after_load_lora_weights(store):
    from diffusers import FluxControlPipeline

    ref = FluxControlPipeline.from_pretrained(store / "flux", local_files_only=True)
    ref.load_lora_weights(str(store / "lora.safetensors"))
    ref.set_progress_bar_config(disable=True)
    hint = PIL.Image.open(store / "hint.png")
    want = ref(prompt="a red cube on grass", control_image=hint, num_inference_steps=3, output_type="pt",
               generator=torch.Generator().manual_seed(0), **COMMON).images
    base = FluxBase.from_pretrained(store / "flux")
    apply_flux_control_lora(base.transformer, store / "lora.safetensors")
    assert is_control_base(base.transformer)
    got = base("a red cube on grass", control_image=hint, steps=3, generator=torch.Generator().manual_seed(0), **COMMON)
    assert got.shape == want.shape and float((got - want).abs().max()) <= 1e-4
    half = FluxBase.from_pretrained(store / "flux")  # alpha = r (no metadata): half the deltas, another picture
    lora_file = store / "lora-no-meta.safetensors"
    from safetensors.torch import load_file

    save_file(load_file(store / "lora.safetensors"), lora_file)
    apply_flux_control_lora(half.transformer, lora_file)
    other = half("a red cube on grass", control_image=hint, steps=3, generator=torch.Generator().manual_seed(0), **COMMON)
    assert float((other - got).abs().max()) > 1e-3  # the metadata's alpha acts
