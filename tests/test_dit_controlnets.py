"""ControlNets for transformer bases (SD3/SD3.5, Flux): the index rules, parity with diffusers'
`SD3ControlNetModel` / `FluxControlNetModel` and transformers on tiny random models, every file
layout (diffusers folder and single file, SAI SD3.5 original, XLabs original), offline config
inference, convert, inspect, and one-line errors for files that are not what they look like."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from diffusers import (
    FluxControlNetModel,
    FluxMultiControlNetModel,
    FluxTransformer2DModel,
    SD3ControlNetModel,
    SD3Transformer2DModel,
)
from safetensors.torch import save_file

from bad_input_tools import assert_user_error, run_cli, unchanged
from controlnet import load_controlnet
from controlnet.checkpoints import read_tensors
from controlnet.checkpoints.dit import infer_flux_config, infer_sd3_config, save_dit_controlnet
from controlnet.errors import CheckpointError
from controlnet.nn.controlled_transformer import (
    DiTResiduals,
    controlled_flux,
    controlled_sd3,
    flux_rule,
    inject,
    sd3_rule,
    used_samples,
    xlabs_rule,
)
from controlnet.nn.dit_controlnet import HINT_TRANSFORMS, FluxControlNet, SD3ControlNet
from tiny_models import randomized

TOL = 1e-4
SD3_BASE = dict(sample_size=32, patch_size=1, in_channels=8, num_layers=4, attention_head_dim=8, num_attention_heads=4,
                joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=8,
                qk_norm="rms_norm")
INSTANTX_SD3 = dict(SD3_BASE, num_layers=3)
INPAINT_SD3 = dict(SD3_BASE, num_layers=2, extra_conditioning_channels=1)
# SAI SD3.5 nets: no qk-norm, so the head width is the family's 64 (the tensors cannot show it)
SAI_BASE = dict(SD3_BASE, attention_head_dim=64, num_attention_heads=2, caption_projection_dim=128, qk_norm=None)
SAI_SD35 = dict(sample_size=32, patch_size=1, in_channels=8, num_layers=2, attention_head_dim=64, num_attention_heads=2,
                joint_attention_dim=None, caption_projection_dim=128, pooled_projection_dim=64, out_channels=8,
                pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False, force_zeros_for_pooled_projection=False)
FLUX_BASE = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                 guidance_embeds=True)
INSTANTX_FLUX = dict(FLUX_BASE, num_layers=1, num_single_layers=2)
UNION_FLUX = dict(FLUX_BASE, num_layers=2, num_single_layers=0, num_mode=10)
XLABS_FLUX = dict(FLUX_BASE, num_layers=2, num_single_layers=0, patch_size=2, conditioning_embedding_channels=4)


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------ index rules

def test_each_family_maps_controlnet_samples_onto_base_blocks_by_its_own_rule():
    assert [sd3_rule(i, 24, 12) for i in range(24)] == [i // 2 for i in range(24)]
    assert [sd3_rule(i, 38, 19) for i in (0, 1, 2, 37)] == [0, 0, 1, 18]
    assert [sd3_rule(i, 4, 3) for i in range(4)] == [0, 0, 1, 2]  # float interval 4/3
    assert [flux_rule(i, 19, 5) for i in (0, 3, 4, 18)] == [0, 0, 1, 4]  # ceil(19/5) = 4
    assert [xlabs_rule(i, 19, 2) for i in range(5)] == [0, 1, 0, 1, 0]
    assert used_samples("xlabs", 19, 2) == [0, 1]
    assert used_samples("sd3", 24, 12) == list(range(12))


def test_union_pro_2_never_uses_its_sixth_block_under_the_flux_rule():
    assert used_samples("flux", 19, 6) == [0, 1, 2, 3, 4]
    # through the equation itself: sample 5 never reaches any of the 19 double blocks
    samples = tuple(torch.full((1, 1, 1), float(10**k)) for k in range(6))
    total = sum(inject(torch.zeros(1, 1, 1), i, 19, [DiTResiduals(samples, (), "flux")]) for i in range(19))
    assert float(total) < 10**5
    assert float(total) == sum(10**flux_rule(i, 19, 6) for i in range(19))


# ------------------------------------------------------------------------------------------ SD3

@pytest.fixture(scope="module")
def sd3():
    torch.manual_seed(0)
    base = randomized(SD3Transformer2DModel(**SD3_BASE), 1)
    nets = {name: randomized(SD3ControlNetModel(**cfg), seed)
            for name, cfg, seed in (("instantx", INSTANTX_SD3, 2), ("inpaint", INPAINT_SD3, 3))}
    g = torch.Generator().manual_seed(4)
    inputs = dict(x=torch.randn(2, 8, 8, 8, generator=g), e=torch.randn(2, 5, 32, generator=g),
                  p=torch.randn(2, 64, generator=g), t=torch.tensor([500.0, 300.0]))
    return base, nets, inputs


def _sd3_reference(ref, base, cond, i, scale=0.7):
    if ref.config.use_pos_embed is False:  # what diffusers' pipeline does for the SAI nets (on a copy)
        ref = copy.deepcopy(ref)
        ref.pos_embed = ref._get_pos_embed_from_transformer(base)
    text = i["e"] if ref.context_embedder is not None else None
    with torch.no_grad():
        return ref(i["x"], cond, scale, text, i["p"], i["t"]).controlnet_block_samples


def _sd3_ours(ours, base, cond, i, scale=0.7):
    text = i["e"] if ours.context_embedder is not None else None
    with torch.no_grad():
        return ours(i["x"], cond, i["t"], i["p"], text, scale, base_pos_embed=base.pos_embed)


@pytest.mark.parametrize("name", ["instantx", "inpaint"])
def test_sd3_controlnet_and_controlled_transformer_equal_diffusers(sd3, name):
    base, nets, i = sd3
    ref = nets[name]
    ours = SD3ControlNet(**ref.config).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(ref.state_dict())
    cond = torch.randn(2, 8 + ref.config.extra_conditioning_channels, 8, 8, generator=torch.Generator().manual_seed(5))
    expected, got = _sd3_reference(ref, base, cond, i), _sd3_ours(ours, base, cond, i)
    assert max_diff(expected, got.double) <= TOL and got.rule == "sd3"
    with torch.no_grad():
        want = base(i["x"], i["e"], i["p"], i["t"], block_controlnet_hidden_states=expected).sample
        plain = base(i["x"], i["e"], i["p"], i["t"]).sample
        y = controlled_sd3(base, i["x"], i["e"], i["p"], i["t"], [got])
    assert float((y - want).abs().max()) <= TOL
    assert float((want - plain).abs().max()) > 100 * TOL  # the control really changes the output


def test_sd3_last_context_pre_only_block_gets_no_residual(sd3):
    base, _, i = sd3
    zero = tuple(torch.zeros(2, 64, 32) for _ in range(4))
    bumped = lambda k: tuple(s + (k == j) for j, s in enumerate(zero))  # noqa: E731
    with torch.no_grad():
        run = lambda s: controlled_sd3(base, i["x"], i["e"], i["p"], i["t"], [DiTResiduals(s, (), "sd3")])  # noqa: E731
        plain = run(zero)
        assert torch.equal(run(bumped(3)), plain)  # sample 3 would follow block 3, the context_pre_only one
        assert not torch.equal(run(bumped(2)), plain)


@pytest.fixture(scope="module")
def sai():
    base = randomized(SD3Transformer2DModel(**SAI_BASE), 6)
    ref = randomized(SD3ControlNetModel(**SAI_SD35), 7)
    g = torch.Generator().manual_seed(8)
    inputs = dict(x=torch.randn(1, 8, 4, 4, generator=g), e=torch.randn(1, 3, 32, generator=g),
                  p=torch.randn(1, 64, generator=g), t=torch.tensor([700.0]))
    return base, ref, inputs, torch.randn(1, 8, 4, 4, generator=g)


def sai_original_state(ref) -> dict:
    """The SAI file's key layout, written out by hand (independently of the package's key tables)."""
    sd, out = ref.state_dict(), {}
    for k, v in sd.items():
        out[k] = v
    for i in range(ref.config.num_layers):
        b = f"transformer_blocks.{i}."
        for p in ("weight", "bias"):
            out[b + f"attn.qkv.{p}"] = torch.cat([out.pop(b + f"attn.to_{x}.{p}") for x in "qkv"])
            out[b + f"attn.proj.{p}"] = out.pop(b + f"attn.to_out.0.{p}")
            out[b + f"mlp.fc1.{p}"] = out.pop(b + f"ff.net.0.proj.{p}")
            out[b + f"mlp.fc2.{p}"] = out.pop(b + f"ff.net.2.{p}")
            out[b + f"adaLN_modulation.1.{p}"] = out.pop(b + f"norm1.linear.{p}")
    out["control_type"] = torch.tensor(1.0)  # canny
    return {k: v.contiguous() for k, v in out.items()}


def test_sai_sd35_original_file_loads_with_its_hint_transform_and_equals_diffusers(sai, tmp_path):
    base, ref, i, cond = sai
    path = tmp_path / "sd3.5_large_controlnet_canny.safetensors"
    save_file(sai_original_state(ref), path)
    cn = load_controlnet(path)
    assert isinstance(cn, SD3ControlNet) and cn.loaded_from["layout"] == "sd35-original"
    assert cn.config.hint_transform == "sd35-canny" and cn.config.force_zeros_for_pooled_projection is False
    expected, got = _sd3_reference(ref, base, cond, i), _sd3_ours(cn, base, cond, i)
    assert max_diff(expected, got.double) <= TOL
    with torch.no_grad():
        want = base(i["x"], i["e"], i["p"], i["t"], block_controlnet_hidden_states=expected).sample
        assert float((controlled_sd3(base, i["x"], i["e"], i["p"], i["t"], [got]) - want).abs().max()) <= TOL


def test_sai_original_converts_to_a_diffusers_folder_and_back_unchanged(sai, tmp_path, capsys):
    _, ref, _, _ = sai
    src = tmp_path / "sai.safetensors"
    save_file(sai_original_state(ref), src)
    code, out, err = run_cli(["convert", src, tmp_path / "folder", "--to", "diffusers"], capsys)
    assert code == 0, err
    again = SD3ControlNetModel.from_pretrained(tmp_path / "folder")  # diffusers reads what we wrote
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.state_dict().items())
    code, out, err = run_cli(["convert", tmp_path / "folder", tmp_path / "back.safetensors", "--to", "original"], capsys)
    assert code == 0, err
    original, back = read_tensors(src)[0], read_tensors(tmp_path / "back.safetensors")[0]
    assert set(original) == set(back) and all(torch.equal(original[k], back[k]) for k in original)


def test_hint_transforms_are_the_published_ones():
    img = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(HINT_TRANSFORMS["sd35-canny"](img), torch.tensor([0.5, 64.25, 128.0]))
    assert torch.equal(HINT_TRANSFORMS["invert"](img), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.equal(HINT_TRANSFORMS["identity"](img), img)
    with pytest.raises(ValueError, match="unknown hint transform"):
        SD3ControlNet(**dict(SAI_SD35, hint_transform="sharpen"))


@pytest.mark.parametrize("control_type,transform", [(0, "identity"), (1, "sd35-canny"), (2, "invert")])
def test_sai_control_type_selects_the_hint_transform(sai, tmp_path, control_type, transform):
    state = sai_original_state(sai[1])
    state["control_type"] = torch.tensor(float(control_type))
    save_file(state, tmp_path / "cn.safetensors")
    assert load_controlnet(tmp_path / "cn.safetensors").config.hint_transform == transform


# ------------------------------------------------------------------------------------------ Flux

@pytest.fixture(scope="module")
def flux():
    base = randomized(FluxTransformer2DModel(**FLUX_BASE), 11)
    nets = {name: randomized(FluxControlNetModel(**cfg), seed) for name, cfg, seed in
            (("instantx", INSTANTX_FLUX, 12), ("union", UNION_FLUX, 13), ("xlabs", XLABS_FLUX, 14),
             ("instantx-b", INSTANTX_FLUX, 15))}
    g = torch.Generator().manual_seed(16)
    inputs = dict(x=torch.randn(1, 16, 16, generator=g), e=torch.randn(1, 4, 32, generator=g),
                  p=torch.randn(1, 32, generator=g), t=torch.tensor([0.6]), g=torch.tensor([3.5]),
                  img_ids=torch.randn(16, 3, generator=g), txt_ids=torch.zeros(4, 3),
                  latent=torch.randn(1, 16, 16, generator=g), pixels=torch.rand(1, 3, 64, 64, generator=g) * 2 - 1)
    return base, nets, inputs


def _flux_cond(name, i):
    return i["pixels"] if name == "xlabs" else i["latent"]


def _flux_reference(ref, cond, i, mode=None, scale=0.6):
    with torch.no_grad():
        return ref(i["x"], cond, mode, scale, i["e"], i["p"], i["t"], i["img_ids"], i["txt_ids"], i["g"], return_dict=False)


def _flux_ours(ours, cond, i, mode=None, scale=0.6):
    with torch.no_grad():
        return ours(i["x"], cond, i["t"], i["p"], i["e"], i["img_ids"], i["txt_ids"], i["g"], mode, scale)


def _flux_base(base, i, double, single, repeat=False):
    with torch.no_grad():
        return base(i["x"], i["e"], i["p"], i["t"], i["img_ids"], i["txt_ids"], i["g"], controlnet_block_samples=double,
                    controlnet_single_block_samples=single, controlnet_blocks_repeat=repeat).sample


@pytest.mark.parametrize("name", ["instantx", "union", "xlabs"])
def test_flux_controlnet_and_controlled_transformer_equal_diffusers(flux, name):
    base, nets, i = flux
    ref = nets[name]
    ours = FluxControlNet(**ref.config).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    mode = torch.tensor([[2]]) if name == "union" else None
    double, single = _flux_reference(ref, _flux_cond(name, i), i, mode)
    got = _flux_ours(ours, _flux_cond(name, i), i, mode)
    assert max_diff([*(double or ()), *(single or ())], [*got.double, *got.single]) <= TOL
    assert got.rule == ("xlabs" if name == "xlabs" else "flux")
    want = _flux_base(base, i, double, single, repeat=name == "xlabs")
    with torch.no_grad():
        y = controlled_flux(base, i["x"], i["e"], i["p"], i["t"], i["img_ids"], i["txt_ids"], i["g"], [got])
    assert float((y - want).abs().max()) <= TOL
    assert float((want - _flux_base(base, i, None, None)).abs().max()) > 100 * TOL


def test_flux_multi_controlnet_and_one_union_net_with_several_modes_equal_diffusers(flux):
    base, nets, i = flux
    ours = {k: FluxControlNet(**v.config).eval() for k, v in nets.items()}
    for k, v in nets.items():
        ours[k].load_state_dict(v.state_dict())
    g = torch.Generator().manual_seed(17)
    conds = [torch.randn(1, 16, 16, generator=g) for _ in range(2)]
    for names, modes in ((["instantx", "instantx-b"], [torch.tensor([-1])] * 2),  # as the pipeline passes: unused
                         (["union"], [torch.tensor([0]), torch.tensor([4])])):
        multi = FluxMultiControlNetModel([nets[n] for n in names])
        with torch.no_grad():
            double, single = multi(i["x"], conds, modes, [0.5, 0.8], i["e"], i["p"], i["t"], i["img_ids"], i["txt_ids"],
                                   i["g"], return_dict=False)
        controls = [_flux_ours(ours[names[k % len(names)]], conds[k], i, modes[k][:, None], s)
                    for k, s in enumerate([0.5, 0.8])]
        want = _flux_base(base, i, double, single)
        with torch.no_grad():
            y = controlled_flux(base, i["x"], i["e"], i["p"], i["t"], i["img_ids"], i["txt_ids"], i["g"], controls)
        assert float((y - want).abs().max()) <= TOL


def xlabs_original_state(ref) -> dict:
    """The x-flux key layout, written out by hand (independently of the package's key tables)."""
    sd = dict(ref.state_dict())
    out = {}
    pop = sd.pop
    for p in ("weight", "bias"):
        out[f"img_in.{p}"] = pop(f"x_embedder.{p}")
        out[f"txt_in.{p}"] = pop(f"context_embedder.{p}")
        out[f"pos_embed_input.{p}"] = pop(f"controlnet_x_embedder.{p}")
        for orig, ours in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"), ("guidance_in", "guidance_embedder")):
            out[f"{orig}.in_layer.{p}"] = pop(f"time_text_embed.{ours}.linear_1.{p}")
            out[f"{orig}.out_layer.{p}"] = pop(f"time_text_embed.{ours}.linear_2.{p}")
        for j, name in enumerate(["conv_in", *(f"blocks.{k}" for k in range(6)), "conv_out"]):
            out[f"input_hint_block.{2 * j}.{p}"] = pop(f"input_hint_block.{name}.{p}")
        for b in range(ref.config.num_layers):
            d, t = f"double_blocks.{b}.", f"transformer_blocks.{b}."
            out[d + f"img_mod.lin.{p}"] = pop(t + f"norm1.linear.{p}")
            out[d + f"txt_mod.lin.{p}"] = pop(t + f"norm1_context.linear.{p}")
            out[d + f"img_attn.qkv.{p}"] = torch.cat([pop(t + f"attn.to_{x}.{p}") for x in "qkv"])
            out[d + f"txt_attn.qkv.{p}"] = torch.cat([pop(t + f"attn.add_{x}_proj.{p}") for x in "qkv"])
            out[d + f"img_attn.proj.{p}"] = pop(t + f"attn.to_out.0.{p}")
            out[d + f"txt_attn.proj.{p}"] = pop(t + f"attn.to_add_out.{p}")
            for m, f in (("img_mlp", "ff"), ("txt_mlp", "ff_context")):
                out[d + f"{m}.0.{p}"] = pop(t + f"{f}.net.0.proj.{p}")
                out[d + f"{m}.2.{p}"] = pop(t + f"{f}.net.2.{p}")
    for b in range(ref.config.num_layers):
        d, t = f"double_blocks.{b}.", f"transformer_blocks.{b}.attn."
        for stream, prefix in (("img", "norm_"), ("txt", "norm_added_")):
            out[d + f"{stream}_attn.norm.query_norm.scale"] = pop(t + prefix + "q.weight")
            out[d + f"{stream}_attn.norm.key_norm.scale"] = pop(t + prefix + "k.weight")
    out.update(sd)  # controlnet_blocks.* keep their names
    assert all(k.startswith("controlnet_blocks.") for k in sd)
    return {k: v.contiguous() for k, v in out.items()}


def test_xlabs_original_file_loads_and_equals_diffusers(flux, tmp_path):
    base, nets, i = flux
    ref = nets["xlabs"]
    save_file(xlabs_original_state(ref), tmp_path / "flux-canny-controlnet-v3.safetensors")
    cn = load_controlnet(tmp_path / "flux-canny-controlnet-v3.safetensors")
    assert isinstance(cn, FluxControlNet) and cn.loaded_from["layout"] == "xlabs-original" and cn.index_rule == "xlabs"
    double, _ = _flux_reference(ref, i["pixels"], i)
    got = _flux_ours(cn, i["pixels"], i)
    assert max_diff(double, got.double) <= TOL


def test_xlabs_original_converts_to_diffusers_and_back_unchanged(flux, tmp_path, capsys):
    ref = flux[1]["xlabs"]
    src = tmp_path / "xlabs.safetensors"
    save_file(xlabs_original_state(ref), src)
    assert run_cli(["convert", src, tmp_path / "folder", "--to", "diffusers"], capsys)[0] == 0
    again = FluxControlNetModel.from_pretrained(tmp_path / "folder")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.state_dict().items())
    assert run_cli(["convert", tmp_path / "folder", tmp_path / "back.safetensors", "--to", "original"], capsys)[0] == 0
    original, back = read_tensors(src)[0], read_tensors(tmp_path / "back.safetensors")[0]
    assert set(original) == set(back) and all(torch.equal(original[k], back[k]) for k in original)


def test_a_wider_hint_encoder_round_trips_through_every_file_form_and_convert(flux, tmp_path, capsys):
    """A hint encoder wider than XLabs' (the mini-dit recipe's option): its widths and the channels it
    ends in are read back off the tensors, so every file form (and convert) gives the same net."""
    wide = randomized(FluxControlNet(**dict(XLABS_FLUX, conditioning_embedding_channels=8, hint_widths=(8, 16, 32, 24))), 17)
    assert wide.controlnet_x_embedder.in_features == 8 * 4 != XLABS_FLUX["in_channels"]
    inferred = infer_flux_config(wide.state_dict())
    assert inferred["conditioning_embedding_channels"] == 8 and inferred["hint_widths"] == (8, 16, 32, 24)
    assert inferred["patch_size"] == 2
    save_dit_controlnet(wide, tmp_path / "folder")
    save_dit_controlnet(wide, tmp_path / "xlabs.safetensors", layout="original")
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, tmp_path / "bare.safetensors")
    assert run_cli(["convert", tmp_path / "xlabs.safetensors", tmp_path / "converted", "--to", "diffusers"], capsys)[0] == 0
    want = _flux_ours(wide, flux[2]["pixels"], flux[2]).double
    for name in ("folder", "xlabs.safetensors", "bare.safetensors", "converted"):
        cn = load_controlnet(tmp_path / name)
        assert tuple(cn.config.hint_widths) == (8, 16, 32, 24) and cn.config.conditioning_embedding_channels == 8, name
        assert all(torch.equal(cn.state_dict()[k], v) for k, v in wide.state_dict().items()), name
        assert max_diff(want, _flux_ours(cn, flux[2]["pixels"], flux[2]).double) <= TOL, name
    info = json.loads(run_cli(["inspect", tmp_path / "xlabs.safetensors", "--json"], capsys)[1])
    assert "8 ch" in info["control_input"] and "8, 16, 32, 24" in info["control_input"], info


def test_an_xlabs_width_net_writes_the_config_diffusers_reads(flux, tmp_path):
    """XLabs' own hint encoder adds nothing to the config: diffusers' FluxControlNetModel loads the folder."""
    ours = load_controlnet(_saved_xlabs(flux, tmp_path))
    assert ours.config.hint_widths is None
    save_dit_controlnet(ours, tmp_path / "ours")
    assert "hint_widths" not in json.loads((tmp_path / "ours" / "config.json").read_text())
    again = FluxControlNetModel.from_pretrained(tmp_path / "ours")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in flux[1]["xlabs"].state_dict().items())


def _saved_xlabs(flux, tmp_path):
    path = tmp_path / "xlabs-original.safetensors"
    save_file(xlabs_original_state(flux[1]["xlabs"]), path)
    return path


# ------------------------------------------------------------------------------------------ diffusers files

@pytest.mark.parametrize("family,name", [("sd3", "instantx"), ("sd3", "inpaint"), ("sd3", "sai"),
                                         ("flux", "instantx"), ("flux", "union"), ("flux", "xlabs")])
@pytest.mark.parametrize("form", ["folder", "single file"])
def test_diffusers_files_load_offline_with_the_config_read_off_the_tensors(sd3, sai, flux, tmp_path, family, name, form):
    ref = sai[1] if name == "sai" else (sd3 if family == "sd3" else flux)[1][name]
    if form == "folder":
        ref.save_pretrained(tmp_path / "cn")
        path = tmp_path / "cn"
    else:  # a bare state dict, as the hubs' single-file renames are: no config anywhere
        path = tmp_path / "cn.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
        infer = infer_sd3_config if family == "sd3" else infer_flux_config
        inferred = infer(ref.state_dict())
        for key, value in inferred.items():
            if key not in ("sample_size", "out_channels"):  # no tensor shows them; neither changes a tensor or an output
                want = ref.config[key]
                assert (list(value) if isinstance(value, tuple) else value) == (list(want) if isinstance(want, tuple) else want), key
    cn = load_controlnet(path)
    assert isinstance(cn, SD3ControlNet if family == "sd3" else FluxControlNet)
    assert all(torch.equal(cn.state_dict()[k], v) for k, v in ref.state_dict().items())
    if family == "flux":  # the config (rotary axes, patch size, modes) is right, not only the tensors
        mode = torch.tensor([[1]]) if name == "union" else None
        double, single = _flux_reference(ref, _flux_cond(name, flux[2]), flux[2], mode)
        got = _flux_ours(cn, _flux_cond(name, flux[2]), flux[2], mode)
        assert max_diff([*(double or ()), *(single or ())], [*got.double, *got.single]) <= TOL


# ------------------------------------------------------------------------------------------ inspect

def test_inspect_names_each_family(sd3, sai, flux, tmp_path, capsys):
    save_file(sai_original_state(sai[1]), tmp_path / "sai.safetensors")
    save_file(xlabs_original_state(flux[1]["xlabs"]), tmp_path / "xlabs.safetensors")
    flux[1]["union"].save_pretrained(tmp_path / "union")
    sd3[1]["inpaint"].save_pretrained(tmp_path / "inpaint")
    save_file(_flux_control_base().state_dict(), tmp_path / "flux1-canny-dev.safetensors")
    wanted = {"sai.safetensors": ("SD3.5 ControlNet", "sd35-original", "sd3"),
              "xlabs.safetensors": ("XLabs", "xlabs-original", "xlabs"),
              "union": ("union", "flux-diffusers-folder", "flux"),
              "inpaint": ("inpainting", "sd3-diffusers-folder", "sd3"),
              "flux1-canny-dev.safetensors": ("FLUX.1 Control", "flux-control", None)}
    for name, (family, layout, rule) in wanted.items():
        code, out, err = run_cli(["inspect", tmp_path / name, "--json"], capsys)
        assert code == 0, err
        info = json.loads(out)
        assert family in info["family"] and info["layout"] == layout and info.get("index_rule") == rule, info


# ------------------------------------------------------------------------------------------ bad files

def _flux_control_base(in_channels: int = 32):
    """A FLUX.1 Control-shaped transformer: the control latent doubles the input channels."""
    return FluxTransformer2DModel(**dict(FLUX_BASE, in_channels=in_channels, out_channels=16))


@pytest.mark.parametrize("in_channels,what", [(32, "FLUX.1 Control"), (16, "Flux base transformer")])
def test_a_flux_base_or_control_model_passed_as_a_controlnet_is_named(tmp_path, capsys, in_channels, what):
    path = tmp_path / "model.safetensors"
    save_file(_flux_control_base(in_channels).state_dict(), path)
    with pytest.raises(CheckpointError, match=what) as info:
        load_controlnet(path)
    assert str(path) in str(info.value)
    with unchanged(tmp_path):
        assert_user_error(["convert", path, tmp_path / "out", "--to", "diffusers"], capsys, str(path), what)


def test_an_sd3_base_passed_as_a_controlnet_is_named(tmp_path):
    save_file(SD3Transformer2DModel(**SD3_BASE).state_dict(), tmp_path / "sd3.safetensors")
    with pytest.raises(CheckpointError, match="SD3 base transformer"):
        load_controlnet(tmp_path / "sd3.safetensors")


def test_an_xlabs_file_missing_a_tensor_says_which_and_what_it_looks_like(flux, tmp_path, capsys):
    state = xlabs_original_state(flux[1]["xlabs"])
    del state["double_blocks.1.txt_mlp.2.weight"]
    save_file(state, tmp_path / "cut.safetensors")
    assert_user_error(["convert", tmp_path / "cut.safetensors", tmp_path / "o", "--to", "diffusers"], capsys,
                      "cut.safetensors", "xlabs-original", "missing")
    with pytest.raises(CheckpointError, match=r"xlabs-original layout.*missing.*transformer_blocks\.1\.ff_context\.net\.2\.weight"):
        load_controlnet(tmp_path / "cut.safetensors")


def test_an_sai_file_with_an_unknown_control_type_is_refused(sai, tmp_path, capsys):
    state = sai_original_state(sai[1])
    state["control_type"] = torch.tensor(7.0)
    save_file(state, tmp_path / "sai.safetensors")
    assert_user_error(["inspect", tmp_path / "sai.safetensors"], capsys, "sai.safetensors", "control_type 7")


def test_a_folder_whose_config_names_the_other_family_is_refused(sd3, flux, tmp_path, capsys):
    flux[1]["instantx"].save_pretrained(tmp_path / "cn")
    config = json.loads((tmp_path / "cn" / "config.json").read_text())
    config["_class_name"] = "SD3ControlNetModel"
    (tmp_path / "cn" / "config.json").write_text(json.dumps(config))
    assert_user_error(["inspect", tmp_path / "cn"], capsys, "SD3ControlNetModel", "flux-diffusers")


def test_an_instantx_net_has_no_original_layout_to_convert_to(sd3, tmp_path, capsys):
    sd3[1]["instantx"].save_pretrained(tmp_path / "cn")
    with unchanged(tmp_path):
        assert_user_error(["convert", tmp_path / "cn", tmp_path / "o.safetensors", "--to", "original"], capsys,
                          "no original layout", "--to diffusers")


@pytest.mark.parametrize("cut", ["one short", "scalar"])
def test_a_fused_qkv_that_does_not_split_in_three_is_refused(sai, tmp_path, cut):
    state = sai_original_state(sai[1])
    qkv = state["transformer_blocks.0.attn.qkv.bias"]
    state["transformer_blocks.0.attn.qkv.bias"] = qkv[:-1].contiguous() if cut == "one short" else qkv[0].clone()
    save_file(state, tmp_path / "sai.safetensors")
    with pytest.raises(CheckpointError, match=r"sai\.safetensors.*sd35-original.*qkv"):
        load_controlnet(tmp_path / "sai.safetensors")


def test_a_dit_controlnet_given_to_a_unet_pipeline_gets_one_line_before_sampling(sd3):
    from controlnet.errors import InputError
    from controlnet.pipeline import check_compatible
    from controlnet.tiny import tiny_unet

    net = SD3ControlNet(**INSTANTX_SD3)
    with pytest.raises(InputError, match="unit 1 is a sd3-controlnet for a transformer base"):
        check_compatible(net, tiny_unet("sd1"), 8, "unit 1")


def test_flux_control_models_take_the_control_latent_on_their_input_channels(flux):
    _, _, i = flux
    base = randomized(_flux_control_base(32), 21)
    g = torch.Generator().manual_seed(22)
    control = torch.randn(1, 16, 16, generator=g)
    args = (i["e"], i["p"], i["t"], i["img_ids"], i["txt_ids"], i["g"])
    with torch.no_grad():  # FluxControlPipeline: transformer(cat([latents, control_latents], dim=2))
        want = base(torch.cat([i["x"], control], dim=2), *args).sample
        got = controlled_flux(base, i["x"], *args, control_tokens=control)
    assert float((got - want).abs().max()) <= TOL
    with pytest.raises(ValueError, match="FLUX.1 Control model"):
        controlled_flux(base, i["x"], *args)
    with pytest.raises(ValueError, match="without a concatenated control"):
        controlled_flux(flux[0], i["x"], *args, control_tokens=control)


@pytest.mark.parametrize("width,what", [(128, "FLUX.1 Control LoRA"), (64, "a Flux LoRA")])
def test_flux_loras_are_named_and_refused(tmp_path, width, what):
    lora = {"transformer.x_embedder.lora_A.weight": torch.zeros(4, width),
            "transformer.x_embedder.lora_B.weight": torch.zeros(3072, 4)}
    save_file(lora, tmp_path / "lora.safetensors")
    with pytest.raises(CheckpointError, match=what):
        load_controlnet(tmp_path / "lora.safetensors")


@pytest.mark.parametrize("damage", ["scalar hint conv", "empty control_type", "nan control_type", "no blocks",
                                    "zero-width head"])
def test_hostile_shapes_get_one_line_naming_the_file(sai, flux, tmp_path, capsys, damage):
    if damage in ("empty control_type", "nan control_type"):
        state = sai_original_state(sai[1])
        state["control_type"] = torch.zeros(0) if damage.startswith("empty") else torch.tensor(float("nan"))
        fragment = "control_type"
    else:
        state = {k: v.contiguous() for k, v in flux[1]["xlabs" if damage == "scalar hint conv" else "instantx"].state_dict().items()}
        if damage == "scalar hint conv":
            state["input_hint_block.conv_out.weight"] = torch.zeros(())
        elif damage == "no blocks":
            state = {k: v for k, v in state.items() if "transformer_blocks" not in k}
        else:
            state["transformer_blocks.0.attn.norm_q.weight"] = torch.zeros(0)
        fragment = "flux-diffusers"
    save_file(state, tmp_path / "bad.safetensors")
    for command in (["inspect", tmp_path / "bad.safetensors"],
                    ["convert", tmp_path / "bad.safetensors", tmp_path / "out", "--to", "diffusers"]):
        assert_user_error(command, capsys, "bad.safetensors", fragment)
    assert not (tmp_path / "out").exists()


def test_a_folder_config_with_a_wrong_field_is_one_line(flux, tmp_path, capsys):
    flux[1]["instantx"].save_pretrained(tmp_path / "cn")
    config = json.loads((tmp_path / "cn" / "config.json").read_text())
    config["num_attention_heads"] = "two"
    (tmp_path / "cn" / "config.json").write_text(json.dumps(config))
    assert_user_error(["inspect", tmp_path / "cn"], capsys, "does not build a FluxControlNet")


def test_training_from_a_dit_controlnet_on_a_unet_base_gets_one_line():
    from types import SimpleNamespace

    from controlnet.errors import InputError
    from controlnet.tiny import tiny_unet
    from controlnet.training.loop import _check_fits

    base = SimpleNamespace(unet=tiny_unet("sd1"), vae_scale_factor=8)
    config = SimpleNamespace(controlnet="flux-canny.safetensors", base_model="tiny")
    with pytest.raises(InputError, match="--controlnet flux-canny.safetensors is a flux-controlnet for a transformer base"):
        _check_fits(FluxControlNet(**dict(INSTANTX_FLUX, axes_dims_rope=(4, 4, 8))), base, config)


def test_an_xlabs_pth_file_loads_too(flux, tmp_path):
    torch.save(xlabs_original_state(flux[1]["xlabs"]), tmp_path / "xlabs.pth")
    cn = load_controlnet(tmp_path / "xlabs.pth")
    assert cn.loaded_from["layout"] == "xlabs-original"
    assert all(torch.equal(cn.state_dict()[k], v) for k, v in flux[1]["xlabs"].state_dict().items())


def test_a_control_input_of_another_size_is_refused_not_broadcast(sd3, flux):
    _, nets, i = sd3
    ours = SD3ControlNet(**nets["instantx"].config).eval()
    with pytest.raises(ValueError, match="gives 1 tokens but the image has 64"):
        ours(i["x"], torch.zeros(2, 8, 1, 1), i["t"], i["p"], i["e"])
    _, fnets, fi = flux
    xlabs = FluxControlNet(**fnets["xlabs"].config).eval()
    with pytest.raises(ValueError, match="pixels 16× the token grid"):
        _flux_ours(xlabs, torch.zeros(1, 3, 16, 16), fi)  # diffusers would broadcast its single token
