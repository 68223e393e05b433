"""Union ControlNets (xinsir union / ProMax): parity with diffusers 0.42's `ControlNetUnionModel` and
`StableDiffusionXLControlNetUnionPipeline` on tiny random models, the batch-attention quirk, loading
the folder and the single-file renames offline, inspect / convert, the unit's control type, bad input."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints import load_controlnet, save_controlnet
from controlnet.errors import CheckpointError, InputError
from controlnet.nn.union import UnionControlNet, control_type_index
from controlnet.pipeline import ControlPipeline, ControlUnit, UnionCondition
from controlnet.tiny import tiny_unet_config
from tiny_models import (
    random_hint,
    save_base_and_controlnet,
    start_latents,
    tiny_controlnet,
    tiny_pipeline,
    tiny_union,
)

W, H = 64, 48  # latent 8x6
TOL = dict(atol=1e-4, rtol=0)
PROMAX_NAME = "controlnet-union-sdxl-1.0-promax.safetensors"


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def union():
    return tiny_union(tiny_unet_config("sdxl"))


def union_state():
    return tiny_union(tiny_unet_config("sdxl")).state_dict()


def inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(batch, 4, H // 8, W // 8, generator=g), timestep=torch.tensor(500),
                encoder_hidden_states=torch.randn(batch, 7, 64, generator=g),
                added_cond_kwargs={"text_embeds": torch.randn(batch, 32, generator=g), "time_ids": torch.randn(batch, 6, generator=g)})


def hints(n: int, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 100)
    return [torch.rand(batch, 3, H, W, generator=g) for _ in range(n)]


def reference(ref, x: dict, hint_list, types, scales):
    batch = x["sample"].shape[0]
    flags = torch.zeros(ref.config.num_control_type).scatter_(0, torch.tensor(types), 1)
    down, mid = ref(**x, controlnet_cond=[h.expand(batch, -1, -1, -1) for h in hint_list], control_type=flags.repeat(batch, 1),
                    control_type_idx=list(types), conditioning_scale=list(scales), return_dict=False)
    return [*down, mid]


def flat(res) -> list[torch.Tensor]:
    return [*res.down, res.mid]


def assert_all_close(got, want):
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


# ------------------------------------------------------------------------------------ the network


def test_state_dict_and_config_equal_diffusers_union_model(union):
    from diffusers import ControlNetUnionModel

    ref = union.to_diffusers()
    assert isinstance(ref, ControlNetUnionModel)
    ours, theirs = union.state_dict(), ref.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert {"task_embedding", "spatial_ch_projs.weight", "transformer_layes.0.attn.in_proj_weight",
            "control_add_embedding.linear_1.weight"} <= set(ours)
    back = UnionControlNet.from_diffusers(ref)
    assert back.config.num_control_type == 8 and all(torch.equal(v, ours[k]) for k, v in back.state_dict().items())


@pytest.mark.parametrize("types, scales", [
    ([3], [0.7]),              # one condition (canny): the scale multiplies the residuals
    ([3, 1], [0.6, 1.3]),      # two conditions in one pass, per-condition scales
    ([0, 5, 2], [1.0, 0.5, 0.8]),
    ([6], [1.0]),              # ProMax tile
    ([7], [0.9]),              # ProMax repaint
])
def test_forward_equals_diffusers(union, types, scales):
    ref = union.to_diffusers().eval()
    x, hs = inputs(), hints(len(types))
    got = union(**x, hint=hs, control_types=types, scales=scales)
    if len(types) == 1:  # one condition: residuals come out unscaled; the caller applies the weight
        got = got.scaled(scales[0])
    want = reference(ref, x, hs, types, scales)
    assert_all_close(flat(got), want)
    other = union(**x, hint=hs, control_types=[(t + 1) % 8 for t in types], scales=scales)
    assert (other.mid - union(**x, hint=hs, control_types=types, scales=scales).mid).abs().max() > 1e-3  # types matter


def test_type_names_follow_xinsir_and_a1111():
    assert [control_type_index(n, 8) for n in ("openpose", "depth", "scribble", "softedge", "canny", "mlsd", "lineart",
                                               "anime_lineart", "normal", "segment", "tile", "repaint", "inpaint")] == \
        [0, 1, 2, 2, 3, 3, 3, 3, 4, 5, 6, 7, 7]
    assert control_type_index("Soft Edge", 8) == 2 and control_type_index("hed/pidi/scribble/ted", 8) == 2
    a1111 = ("OpenPose", "Depth", "Soft Edge", "Hard Edge", "Normal Map", "Segmentation", "Tile", "Inpaint")  # its enum
    assert [control_type_index(n, 8) for n in a1111] == list(range(8))
    with pytest.raises(InputError, match="tile and repaint need the ProMax"):
        control_type_index("tile", 6)


# ------------------------------------------------------------------------------------ the batch quirk


def test_the_condition_layer_mixes_batch_rows_not_tokens_unless_told():
    """The bare layer (wave3_families.md §5): sequence-first attention on (B, L, C)."""
    from diffusers.models.controlnets.controlnet_union import ResidualAttentionBlock as Reference

    from controlnet.nn.union import ResidualAttentionBlock

    torch.manual_seed(0)
    ref, ours = Reference(32, 4).eval(), ResidualAttentionBlock(32, 4).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32)
    x2 = x.clone()
    x2[:, 1] = torch.randn(2, 32)  # not a constant shift, which the layer norm would remove
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    assert (ours(x)[:1] - ours(x[:1])).abs().max() > 0.1  # rows mix
    assert torch.equal(ours(x2)[:, 0], ours(x)[:, 0])  # tokens never do
    torch.testing.assert_close(ours(x, "tokens")[:1], ours(x[:1], "tokens"), **TOL)  # opt-out: rows independent
    assert (ours(x2, "tokens")[:, 0] - ours(x, "tokens")[:, 0]).abs().max() > 0.1  # tokens attend to each other


def test_reference_attends_across_the_batch_and_tokens_opt_out_does_not(union):
    """Default: rows of a batch with *different* hints change each other (as in diffusers); a batch
    sharing one hint gives every row its single-row result. attend_across='tokens': rows independent."""
    union = UnionControlNet.from_config(union.config).eval()
    union.load_state_dict({**union_state(), "task_embedding": torch.zeros(8, 32)})  # tokens = the hints' features
    ref = union.to_diffusers().eval()
    x = inputs(batch=2)
    mixed = [torch.cat([torch.zeros(1, 3, H, W), torch.ones(1, 3, H, W)])]  # row 0 and row 1 have different hints
    got = union(**x, hint=mixed, control_types=[3])
    assert_all_close(flat(got), reference(ref, x, mixed, [3], [1.0]))
    row0 = {k: (v[:1] if torch.is_tensor(v) and v.ndim else v) for k, v in x.items() if k != "added_cond_kwargs"}
    row0["added_cond_kwargs"] = {k: v[:1] for k, v in x["added_cond_kwargs"].items()}
    alone = union(**row0, hint=[mixed[0][:1]], control_types=[3])
    assert (got.mid[:1] - alone.mid).abs().max() > 1e-4  # the quirk: row 0 depends on row 1's hint

    shared = [mixed[0][:1]]  # one hint for the batch (the usual case, CFG included): no effect
    assert_all_close(flat(union(**x, hint=shared, control_types=[3]))[-1:][0][:1], alone.mid)

    tokens = UnionControlNet.from_config({**union.config, "attend_across": "tokens"})
    tokens.load_state_dict(union.state_dict())
    tokens.eval()
    got_t = tokens(**x, hint=mixed, control_types=[3])
    assert_all_close([got_t.mid[:1]], [tokens(**row0, hint=[mixed[0][:1]], control_types=[3]).mid])
    with pytest.raises(ValueError, match="no diffusers equivalent"):
        tokens.to_diffusers()


# ------------------------------------------------------------------------------------ the sampling path


@pytest.fixture(scope="module")
def sdxl():
    pipe = tiny_pipeline("sdxl")
    return pipe, tiny_union(dict(pipe.unet.config), seed=3)


def union_pipeline(pipe, cn):
    from diffusers import StableDiffusionXLControlNetUnionPipeline

    out = StableDiffusionXLControlNetUnionPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer,
        tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, controlnet=cn.to_diffusers().eval(), scheduler=pipe.scheduler)
    out.set_progress_bar_config(disable=True)
    return out


def ours(pipe, units, **kw):
    kw.setdefault("latents", start_latents(pipe, W, H, kw.get("num_images", 1)))
    return ControlPipeline.from_diffusers(pipe)("a red cube", units, steps=2, guidance_scale=7.0, scheduler="euler",
                                                output_type="latent", progress=False, **kw).images


def theirs(pipe, cn, images, modes, **kw):
    return union_pipeline(pipe, cn)("a red cube", control_image=images, control_mode=modes, num_inference_steps=2,
                                    guidance_scale=7.0, latents=start_latents(pipe, W, H), output_type="latent",
                                    height=H, width=W, **kw).images


def test_one_condition_equals_diffusers_union_pipeline(sdxl):
    pipe, cn = sdxl
    hint = random_hint(W, H, seed=1)
    got = ours(pipe, ControlUnit(cn, hint, weight=0.8, control_type="canny", resize=None))
    torch.testing.assert_close(got, theirs(pipe, cn, [hint], [3], controlnet_conditioning_scale=0.8), **TOL)
    base = pipe("a red cube", num_inference_steps=2, guidance_scale=7.0, latents=start_latents(pipe, W, H), width=W,
                height=H, output_type="latent").images
    assert (got - base).abs().max() > 1e-2  # the control is visible


def test_cond_only_mode_runs_the_union_on_the_conditional_half(sdxl):
    """diffusers' union pipeline fails in guess mode with CFG (docs/families.md), so no parity here."""
    pipe, cn = sdxl
    hint = random_hint(W, H, seed=6)
    batches = []
    forward = cn.forward
    cn.forward = lambda sample, *a, **k: batches.append(sample.shape[0]) or forward(sample, *a, **k)
    try:
        pair = [hint, random_hint(W, H, seed=7)]
        got = ours(pipe, ControlUnit(cn, pair, control_type="depth", mode="control", resize=None), num_images=2)
        balanced = ours(pipe, ControlUnit(cn, pair, control_type="depth", resize=None), num_images=2)
    finally:
        del cn.forward
    assert batches[:2] == [2, 2] and batches[2:] == [4, 4]  # cond half of a 2-image CFG batch; then the full batch
    assert torch.isfinite(got).all() and (got - balanced).abs().max() > 1e-3


def test_two_conditions_in_one_pass_equal_diffusers_with_per_condition_scales(sdxl):
    pipe, cn = sdxl
    h1, h2 = random_hint(W, H, seed=1), random_hint(W, H, seed=2)
    calls = []
    forward = cn.forward
    cn.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    try:
        unit = ControlUnit(cn, None, conditions=[("depth", h1, 0.6), UnionCondition("openpose", h2, 1.3)], resize=None)
        got = ours(pipe, unit)
    finally:
        del cn.forward
    assert len(calls) == 2  # one union pass per step (2 steps), whatever the number of conditions
    want = theirs(pipe, cn, [h1, h2], [1, 0], controlnet_conditioning_scale=[0.6, 1.3])
    torch.testing.assert_close(got, want, **TOL)


def test_promax_repaint_hint_is_black_where_masked_and_tile_equals_diffusers(sdxl):
    from controlnet.pipeline.inpaint import inpaint_map

    pipe, cn = sdxl
    photo = np.asarray(random_hint(W, H, seed=4))
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 20:50] = 255
    black = photo.copy()
    black[mask > 0] = 0  # xinsir's ProMax rule: controlnet_img[mask > 0] = 0
    from PIL import Image

    got = ours(pipe, ControlUnit(cn, inpaint_map(photo, mask), control_type="repaint", resize=None))
    torch.testing.assert_close(got, theirs(pipe, cn, [Image.fromarray(black)], [7]), **TOL)
    tile = random_hint(W, H, seed=5)
    torch.testing.assert_close(ours(pipe, ControlUnit(cn, tile, control_type="tile", resize=None)),
                               theirs(pipe, cn, [tile], [6]), **TOL)


def test_unit_control_type_errors(sdxl):
    pipe, cn = sdxl
    hint = random_hint(W, H)
    with pytest.raises(InputError, match="needs a control type.*openpose, depth"):
        ControlUnit(cn, hint)
    with pytest.raises(InputError, match="'bogus' is unknown; valid: openpose, depth, hed, canny, normal, segment, tile, repaint"):
        ControlUnit(cn, hint, control_type="bogus")
    plain = tiny_controlnet(pipe)
    with pytest.raises(InputError, match="plain ControlNet.*drop the control type"):
        ControlUnit(plain, hint, control_type="canny")
    with pytest.raises(InputError, match="repaint need the ProMax"):
        ControlUnit(tiny_union(dict(pipe.unet.config), types=6), hint, control_type="repaint")
    with pytest.raises(InputError, match="condition scale"):
        ControlUnit(cn, None, conditions=[("depth", hint, -1)])


# ------------------------------------------------------------------------------------ files


@pytest.fixture(scope="module")
def exact_union():
    """A union whose shapes follow SDXL's conventions, so a file without a config loads exactly."""
    return tiny_union(tiny_unet_config("sdxl", exact=True), seed=5)


def bare_file(cn, path):
    """The single-file renames users download: diffusers key names, no config in the header."""
    save_file({k: v.contiguous() for k, v in cn.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("types", [6, 8])
def test_single_file_without_config_and_diffusers_folder_load_offline(tmp_path, types):
    cn = tiny_union(tiny_unet_config("sdxl", exact=True), types=types, seed=5)
    path = bare_file(cn, tmp_path / PROMAX_NAME)
    got = load_controlnet(path)
    assert isinstance(got, UnionControlNet) and got.loaded_from["family"] == "union"
    assert got.config.num_control_type == types and got.config.addition_time_embed_dim == 256
    x = {**inputs(), "encoder_hidden_states": torch.randn(2, 7, 2048), "added_cond_kwargs": {
        "text_embeds": torch.randn(2, 1280), "time_ids": torch.randn(2, 6)}}
    x["sample"] = torch.randn(2, 4, H // 8, W // 8)
    hs = hints(2)
    assert_all_close(flat(got(**x, hint=hs, control_types=[1, 3], scales=[0.5, 1.0])),
                     flat(cn(**x, hint=hs, control_types=[1, 3], scales=[0.5, 1.0])))
    cn.to_diffusers().save_pretrained(tmp_path / "folder")  # diffusers' own folder
    folder = load_controlnet(tmp_path / "folder")
    assert isinstance(folder, UnionControlNet) and folder.config.num_control_type == types
    assert all(torch.equal(v, cn.state_dict()[k]) for k, v in folder.state_dict().items())


def test_folder_config_without_union_fields_is_completed_from_the_tensors(tmp_path, exact_union):
    exact_union.to_diffusers().save_pretrained(tmp_path / "f")
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    for key in ("num_control_type", "num_trans_channel", "num_trans_head", "num_trans_layer", "num_proj_channel"):
        config.pop(key)  # as in xinsir's own config.json, which names its class ControlNetModel_Union
    (tmp_path / "f" / "config.json").write_text(json.dumps({**config, "_class_name": "ControlNetModel_Union"}))
    assert load_controlnet(tmp_path / "f").config.num_control_type == 8


def test_inspect_names_union_and_its_types(tmp_path, capsys, exact_union):
    path = bare_file(exact_union, tmp_path / PROMAX_NAME)
    code, out, err = run_cli(["inspect", path, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "union" and info["base"] == "sdxl"  # was "sdxl-like", its union tensors ignored
    assert info["control_types"] == "openpose, depth, hed, canny, normal, segment, tile, repaint"


def test_convert_round_trips_and_refuses_the_original_layout(tmp_path, capsys, exact_union):
    src = bare_file(exact_union, tmp_path / PROMAX_NAME)
    for dst in (tmp_path / "out", tmp_path / "out.safetensors"):
        code, _, err = run_cli(["convert", src, dst, "--to", "diffusers"], capsys)
        assert code == 0, err
        back = load_controlnet(dst)
        assert isinstance(back, UnionControlNet)
        assert all(torch.equal(v, exact_union.state_dict()[k]) for k, v in back.state_dict().items())
    from diffusers import ControlNetUnionModel

    assert isinstance(ControlNetUnionModel.from_pretrained(tmp_path / "out"), ControlNetUnionModel)
    assert_user_error(["convert", src, tmp_path / "o.safetensors", "--to", "original"], capsys,
                      "ControlNetUnionModel has no original-layout equivalent")
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises(InputError):
        save_controlnet(exact_union, tmp_path / "o.pth", layout="original")


# ------------------------------------------------------------------------------------ bad files


def test_truncated_union_file_gives_one_line_naming_it(tmp_path, capsys, exact_union):
    path = bare_file(exact_union, tmp_path / PROMAX_NAME)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=PROMAX_NAME):
        load_controlnet(path)
    assert_user_error(["inspect", path], capsys, PROMAX_NAME)


@pytest.mark.parametrize("shape", [(8,), (8, 32, 1), (0, 64)])
def test_task_embedding_of_an_odd_shape_is_refused_naming_the_file(tmp_path, capsys, exact_union, shape):
    path = bare_file(exact_union, tmp_path / PROMAX_NAME)
    state = load_file(str(path))
    state["task_embedding"] = torch.zeros(shape)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"{PROMAX_NAME}.*task_embedding has shape"):
        load_controlnet(path)
    assert_user_error(["inspect", path], capsys, PROMAX_NAME, "task_embedding")


def test_mismatched_union_file_names_the_file(tmp_path, exact_union):
    path = bare_file(exact_union, tmp_path / PROMAX_NAME)
    state = load_file(str(path))
    state["task_embedding"] = torch.zeros(6, 64)  # 6 types, but the control-type embedding was made for 8 (8 x 256 inputs)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"{PROMAX_NAME}.*control_add_embedding takes 2048 inputs, not a multiple"):
        load_controlnet(path)
    del state["spatial_ch_projs.weight"]
    state["task_embedding"] = torch.zeros(8, 64)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=rf"{PROMAX_NAME}.*without 'spatial_ch_projs.weight'"):
        load_controlnet(path)


# ------------------------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("union_cli")
    pipe = save_base_and_controlnet(d, "sdxl")
    save_controlnet(tiny_union(dict(pipe.unet.config), seed=2), d / PROMAX_NAME)
    random_hint(W, H, seed=1).save(d / "a.png")
    return d


def generate(d, out, *unit):
    return ["generate", "--model", d / "base", "--prompt", "a house", "--steps", "2", "--seed", "1", "--scheduler", "euler",
            "--width", W, "--height", H, "-o", out, *unit]


def test_generate_with_a_control_type(cli_files, tmp_path, capsys):
    d = cli_files
    code, _, err = run_cli(generate(d, tmp_path, "--controlnet", d / PROMAX_NAME, "--image", d / "a.png",
                                    "--control-type", "canny"), capsys)
    assert code == 0, err
    from PIL import Image

    png = Image.open(tmp_path / "00000-1.png")
    assert json.loads(png.text["controlnet"])["units"][0]["control_type"] == "canny"
    code, _, err = run_cli(generate(d, tmp_path / "depth", "--controlnet", d / PROMAX_NAME, "--image", d / "a.png",
                                    "--control-type", "depth"), capsys)
    assert code == 0, err
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "depth" / "00000-1.png")), np.asarray(png))


def test_generate_control_type_errors_are_one_line(cli_files, tmp_path, capsys):
    d = cli_files
    unit = ["--controlnet", d / PROMAX_NAME, "--image", d / "a.png"]
    assert_user_error(generate(d, tmp_path, *unit, "--control-type", "bogus"), capsys, "'bogus' is unknown",
                      "valid: openpose, depth, hed, canny, normal, segment, tile, repaint")
    assert_user_error(generate(d, tmp_path, *unit), capsys, "needs a control type", "--control-type")
    assert_user_error(generate(d, tmp_path, "--controlnet", d / "cn", "--image", d / "a.png", "--control-type", "canny"),
                      capsys, "plain ControlNet", "drop the control type")


def test_union_on_another_base_family_is_refused_naming_both(sdxl):
    _, cn = sdxl
    sd1 = ControlPipeline.from_diffusers(tiny_pipeline("sd1"))
    unit = ControlUnit(cn, random_hint(W, H), control_type="depth", resize=None, name="unit 1 (promax.safetensors)")
    with pytest.raises(InputError, match=r"unit 1 \(promax.safetensors\) was made for a sdxl-like base model but the base model is custom"):
        sd1("a red cube", [unit], steps=1, progress=False, output_type="latent")
