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

from bad_input_tools import assert_user_error
from controlnet.checkpoints.flux_control_lora import apply_flux_control_lora, bfl_to_diffusers
from controlnet.pipeline.flux import FluxBase, is_control_base
from dit_bases import assert_control_generate_equals_base_and_replays, save_flux_base, save_sd3_base

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


def real_bfl_lora(rank: int = RANK, seed: int = 0) -> dict:
    """A Control LoRA with BFL's real names and FLUX.1-dev's real shapes (width 3072, 19 double / 38
    single blocks, 64 latent channels widened to 128), random rank-`rank` factors, lora_B biases on
    every kind of fused layer and on the input layer, the 128-wide norm scales."""
    w, mlp, g = 3072, 4 * 3072, torch.Generator().manual_seed(seed)
    linears = {"time_in.in_layer": (256, w), "time_in.out_layer": (w, w), "vector_in.in_layer": (768, w),
               "vector_in.out_layer": (w, w), "guidance_in.in_layer": (256, w), "guidance_in.out_layer": (w, w),
               "txt_in": (4096, w), "img_in": (128, w), "final_layer.linear": (w, 64),
               "final_layer.adaLN_modulation.1": (w, 2 * w)}
    norms = []
    for i in range(19):
        for s in ("img", "txt"):
            linears.update({f"double_blocks.{i}.{s}_mod.lin": (w, 6 * w), f"double_blocks.{i}.{s}_attn.qkv": (w, 3 * w),
                            f"double_blocks.{i}.{s}_attn.proj": (w, w), f"double_blocks.{i}.{s}_mlp.0": (w, mlp),
                            f"double_blocks.{i}.{s}_mlp.2": (mlp, w)})
            norms += [f"double_blocks.{i}.{s}_attn.norm.{n}_norm.scale" for n in ("query", "key")]
    for i in range(38):
        linears.update({f"single_blocks.{i}.modulation.lin": (w, 3 * w), f"single_blocks.{i}.linear1": (w, 3 * w + mlp),
                        f"single_blocks.{i}.linear2": (w + mlp, w)})
        norms += [f"single_blocks.{i}.norm.{n}_norm.scale" for n in ("query", "key")]
    state = {}
    for name, (n_in, n_out) in linears.items():
        state[f"{name}.lora_A.weight"] = torch.randn(rank, n_in, generator=g)
        state[f"{name}.lora_B.weight"] = torch.randn(n_out, rank, generator=g)
    for name in ("img_in", "double_blocks.3.img_attn.qkv", "double_blocks.5.txt_attn.qkv", "single_blocks.7.linear1",
                 "final_layer.adaLN_modulation.1"):
        state[f"{name}.lora_B.bias"] = torch.randn(linears[name][1], generator=g)
    state.update({k: torch.rand(128, generator=g) + 0.5 for k in norms})
    return state


def _swapped(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2)
    return torch.cat([second, first])


def test_the_bfl_layout_at_flux1_size_converts_as_diffusers_converts_it():
    from diffusers.loaders.lora_conversion_utils import _convert_bfl_flux_control_lora_to_diffusers

    bfl = real_bfl_lora()
    theirs = _convert_bfl_flux_control_lora_to_diffusers(dict(bfl))
    ours = {f"transformer.{k}": v for k, v in bfl_to_diffusers(dict(bfl)).items()}
    assert set(ours) == set(theirs) and len(ours) > 1000
    final_down = "transformer.norm_out.linear.lora_A.weight"
    for key in ours:
        if key != final_down:
            assert ours[key].shape == theirs[key].shape and torch.equal(ours[key], theirs[key]), key
    # the one difference: diffusers swaps the rows of the final modulation's lora_A along with lora_B's,
    # which permutes A's rank components alone; kept here, the merged delta is BFL's with its
    # (shift, scale) output halves swapped to diffusers' (scale, shift), as the base weight is
    assert torch.equal(ours[final_down], bfl["final_layer.adaLN_modulation.1.lora_A.weight"])
    assert torch.equal(theirs[final_down], _swapped(ours[final_down]))
    up = ours["transformer.norm_out.linear.lora_B.weight"]
    bfl_delta = bfl["final_layer.adaLN_modulation.1.lora_B.weight"] @ bfl["final_layer.adaLN_modulation.1.lora_A.weight"]
    assert torch.equal(up @ ours[final_down], _swapped(bfl_delta))
    assert not torch.allclose(up @ theirs[final_down], _swapped(bfl_delta))


def lora_to_bfl(lora: dict) -> dict:
    """A diffusers-layout Control LoRA for the tiny base in BFL's names (its fused layers' parts share one
    lora_A, which BFL's layout stores once). The base converter of test_dit_base_files renames (and
    concatenates, and swaps) lora_B as a base weight; lora_A takes the same names, one copy per fused layer."""
    from test_dit_base_files import to_bfl

    lora = {k.removeprefix("transformer."): v for k, v in lora.items()}
    norms = {k: v for k, v in lora.items() if ".lora_" not in k}
    ups = {k.replace(".lora_B.", "."): v for k, v in lora.items() if ".lora_B." in k}
    downs = {k.replace(".lora_A.", "."): v for k, v in lora.items() if ".lora_A." in k}
    out = {k.replace(".weight", ".lora_B.weight").replace(".bias", ".lora_B.bias"): v
           for k, v in to_bfl({**ups, **norms}).items() if not k.endswith(".scale")}
    out.update({k: v for k, v in to_bfl({**ups, **norms}).items() if k.endswith(".scale")})
    a_rows = next(iter(downs.values())).shape[0]
    as_bfl = to_bfl({**downs, **{k.replace(".weight", ".bias"): torch.zeros(2) for k in downs}, **norms})
    for key, value in as_bfl.items():
        if key.endswith(".weight"):
            kept = downs["norm_out.linear.weight"] if key.startswith("final_layer.adaLN") else value[:a_rows]
            out[key.replace(".weight", ".lora_A.weight")] = kept
    return out


def _shared_downs(lora: dict) -> dict:
    """The LoRA with each fused layer's parts given one lora_A (the q part's), as BFL's layout stores it."""
    lora = dict(lora)
    for key in list(lora):
        for part, first in ((".attn.to_k.", ".attn.to_q."), (".attn.to_v.", ".attn.to_q."), (".proj_mlp.", ".attn.to_q."),
                            (".attn.add_k_proj.", ".attn.add_q_proj."), (".attn.add_v_proj.", ".attn.add_q_proj.")):
            if part in key and key.endswith("lora_A.weight"):
                lora[key] = lora[key.replace(part, first)].clone()
    return lora


def test_a_tiny_bfl_file_converts_back_and_applies_as_its_diffusers_twin(store, tmp_path):
    base = FluxBase.from_pretrained(store / "flux")
    twin = _shared_downs(random_control_lora(base.transformer, seed=5))
    bfl = lora_to_bfl(twin)
    assert any(k.startswith("double_blocks.") for k in bfl) and "img_in.lora_A.weight" in bfl
    back = bfl_to_diffusers(dict(bfl))
    assert set(back) == {k.removeprefix("transformer.") for k in twin}
    assert all(torch.equal(v, twin[f"transformer.{k}"]) for k, v in back.items())
    save_file(bfl, tmp_path / "bfl.safetensors")
    save_file(twin, tmp_path / "twin.safetensors")
    other = FluxBase.from_pretrained(store / "flux")
    apply_flux_control_lora(base.transformer, tmp_path / "bfl.safetensors")
    apply_flux_control_lora(other.transformer, tmp_path / "twin.safetensors")
    got, want = base.transformer.state_dict(), other.transformer.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)
    assert base.transformer.x_embedder.in_features == 32 and is_control_base(base.transformer)


def test_generate_with_a_control_lora_equals_the_api_and_replays(store, capsys):
    argv = ["generate", "--model", store / "flux", "--control-lora", store / "lora.safetensors", "--prompt", "a red cube",
            "--control-image", store / "hint.png", "--steps", "2", "--seed", "3", "-o", store / "out", "--no-grid"]
    base = FluxBase.from_pretrained(store / "flux", control_lora=store / "lora.safetensors")
    assert_control_generate_equals_base_and_replays(argv, base, store / "hint.png", SIZE, capsys)


def _bad_files(store) -> None:
    """LoRAs that do not fit: another width, a plain LoRA, a truncated file, a pickle that is more than tensors."""
    from diffusers import FluxTransformer2DModel

    from dit_bases import FLUX

    if (store / "plain.safetensors").is_file():
        return
    with torch.device("meta"):
        wider = FluxTransformer2DModel(**dict(FLUX, num_attention_heads=3))
    save_file(random_control_lora(wider.to_empty(device="cpu")), store / "wider.safetensors")
    save_file(random_control_lora(FluxBase.from_pretrained(store / "flux").transformer, wide=1), store / "plain.safetensors")
    data = (store / "lora.safetensors").read_bytes()
    (store / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    torch.save({"x.lora_A.weight": torch.zeros(1), "code": print}, store / "pickle.pt")


@pytest.mark.parametrize("model, extra, fragments", [
    ("flux", ["--control-lora", "wider.safetensors"], ("FLUX.1 Control LoRA for a Flux base of width 48", "made for")),
    ("flux", ["--control-lora", "plain.safetensors"], ("plain Flux LoRA", "FLUX.1-Canny-dev-lora")),
    ("flux", ["--control-lora", "truncated.safetensors"], ("truncated",)),
    ("flux", ["--control-lora", "pickle.pt"], ("refused", "safetensors")),
    ("flux", ["--control-lora", "missing.safetensors"], ("--control-lora", "no such file")),
    ("flux", ["--control-lora", "lora.safetensors", "--no-control-image"], ("--control-lora", "--control-image")),
    ("sd3", ["--control-lora", "lora.safetensors"], ("--control-lora", "SD3")),
    ("mini", ["--control-lora", "lora.safetensors"], ("--control-lora", "Flux base")),
    ("flux", ["--controlnet", "lora.safetensors", "--image", "hint.png"], ("FLUX.1 Control LoRA", "--control-lora FILE, a plain")),
    ("flux", ["--controlnet", "plain.safetensors", "--image", "hint.png"], ("Flux LoRA", "FLUX.1 Control LoRAs only")),
])
def test_control_loras_that_do_not_fit_are_one_line(store, capsys, model, extra, fragments):
    _bad_files(store)
    hint = [] if "--no-control-image" in extra else ["--control-image", store / "hint.png"]
    extra = [store / a if a.endswith((".png", ".safetensors", ".pt")) else a for a in extra if a != "--no-control-image"]
    err = assert_user_error(["generate", "--model", store / model if model != "mini" else model, *extra, *hint,
                             "--steps", "1", "-o", store / "out"], capsys, *fragments)
    assert len(err.strip().splitlines()) == 1


def test_a_control_lora_on_a_control_base_is_refused(store, tmp_path):
    from diffusers import FluxTransformer2DModel

    from controlnet.errors import CheckpointError
    from dit_bases import FLUX

    control = FluxTransformer2DModel(**dict(FLUX, in_channels=32, out_channels=16))
    with pytest.raises(CheckpointError, match="already a FLUX.1 Control model"):
        apply_flux_control_lora(control, store / "lora.safetensors")
