"""Checkpoint formats: every layout detected and loaded, bit-exact round trips, clear errors."""

import json
import os
import pickle
import warnings

import pytest
import torch
import yaml
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import save_file

from controlnet import CheckpointError, ControlNet, load_controlnet, save_controlnet
from controlnet.checkpoints import (
    detect_layout,
    infer_config,
    ours_to_original,
    read_tensors,
    read_unet_encoder,
    transfer_control,
)
from controlnet.nn import controlled_unet
from controlnet.tiny import FAMILIES, randomize_connections, tiny_unet, tiny_unet_config, unet_inputs


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference tests: no autograd (per test, not process-wide, so training tests keep theirs)."""
    with torch.no_grad():
        yield


def make(family="sd1", exact=False, seed=0):
    unet = tiny_unet(family, exact)
    cn = ControlNet.from_unet(unet, vae_scale_factor=2).eval()
    randomize_connections(cn, seed=seed)
    return unet, cn


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", FAMILIES)
def test_original_file_written_by_us_matches_diffusers_within_1e5(family, tmp_path):
    unet, cn = make(family)
    path = save_controlnet(cn, tmp_path / "control_x.safetensors", layout="original")
    loaded = load_controlnet(path)
    assert loaded.loaded_from["layout"] == "original" and same_weights(loaded, cn)
    ref = cn.to_diffusers()
    sample, t, ehs, hint, added = unet_inputs(unet)
    ours = loaded(sample, t, ehs, hint, added_cond_kwargs=added)
    down, mid = ref(sample, t, ehs, hint, added_cond_kwargs=added, return_dict=False)
    out = controlled_unet(unet, sample, t, ehs, [(ours, 1.0)], added_cond_kwargs=added)
    expected = unet(sample, t, ehs, added_cond_kwargs=added, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_folder_written_by_diffusers_loads(family, tmp_path):
    unet, cn = make(family)
    cn.to_diffusers().save_pretrained(tmp_path / "cn")
    loaded = load_controlnet(tmp_path / "cn")
    assert loaded.loaded_from["layout"] == "diffusers-folder" and same_weights(loaded, cn)
    sample, t, ehs, hint, added = unet_inputs(unet)
    down, mid = ControlNetModel.from_pretrained(tmp_path / "cn")(sample, t, ehs, hint, added_cond_kwargs=added, return_dict=False)
    ours = loaded(sample, t, ehs, hint, added_cond_kwargs=added)
    for a, b in zip((*ours.down, ours.mid), (*down, mid)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # and diffusers reads what we write
    save_controlnet(cn, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["_class_name"] == "ControlNetModel"
    theirs = ControlNetModel.from_pretrained(tmp_path / "ours")
    assert all(torch.equal(theirs.state_dict()[k], v) for k, v in cn.state_dict().items())


def test_our_original_keys_agree_with_diffusers_own_converter():
    # diffusers' converter hard-codes the published 8-conv hint block, so use that one here
    cn = ControlNet.from_unet(tiny_unet("sd1"), vae_scale_factor=8)
    randomize_connections(cn)
    original = ours_to_original(cn.state_dict(), cn.config.layers_per_block)
    assert "input_hint_block.14.weight" in original and "zero_convs.5.0.weight" in original
    converted = convert_controlnet_checkpoint({"control_model." + k: v for k, v in original.items()}, dict(cn.config))
    assert converted.keys() == cn.state_dict().keys()
    assert all(torch.equal(converted[k], v) for k, v in cn.state_dict().items())


def test_round_trips_are_bit_exact_through_every_layout(tmp_path):
    _, cn = make("sdxl")
    a = load_controlnet(save_controlnet(cn, tmp_path / "a.safetensors", layout="original"))
    b = load_controlnet(save_controlnet(a, tmp_path / "b"))  # diffusers folder
    c = load_controlnet(save_controlnet(b, tmp_path / "c.pth", layout="original"), config=dict(cn.config))
    d = ControlNet.from_diffusers(c.to_diffusers())
    e = load_controlnet(save_controlnet(d, tmp_path / "e.safetensors"))  # diffusers single file
    for m in (a, b, c, d, e):
        assert same_weights(m, cn)
    original_a, _ = read_tensors(tmp_path / "a.safetensors")
    original_c = torch.load(tmp_path / "c.pth", weights_only=True)
    assert original_a.keys() == original_c.keys() and all(torch.equal(original_a[k], original_c[k]) for k in original_a)


def test_every_layout_is_detected_from_a_file_in_that_layout(tmp_path):
    unet, cn = make("sd1")
    bare = ours_to_original(cn.state_dict(), cn.config.layers_per_block)
    files = {
        "original": {"control_model." + k: v for k, v in bare.items()},
        "original-bare": bare,
        "controlldm": {**{"control_model." + k: v for k, v in bare.items()},
                       **{"model.diffusion_model." + k: v.clone() for k, v in list(bare.items())[:5]},
                       "first_stage_model.decoder.conv_in.weight": torch.zeros(2), "cond_stage_model.x": torch.zeros(1)},
        "diffusers": cn.state_dict(),
    }
    for layout, tensors in files.items():
        path = tmp_path / f"{layout}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))  # no stored config
        assert detect_layout(read_tensors(path)[0]) == layout
        loaded = load_controlnet(path, config={"norm_num_groups": 8, "attention_head_dim": 4, "cross_attention_dim": 32})
        assert loaded.loaded_from["layout"] == layout and same_weights(loaded, cn)
    torch.save({"state_dict": files["original"]}, tmp_path / "nested.ckpt")  # Lightning-style nesting
    assert same_weights(load_controlnet(tmp_path / "nested.ckpt", config={"norm_num_groups": 8, "attention_head_dim": 4}), cn)


@pytest.mark.parametrize("family", FAMILIES)
def test_architecture_is_inferred_from_shapes_alone(family, tmp_path):
    unet, cn = make(family, exact=True)
    tensors = {"control_model." + k: v for k, v in ours_to_original(cn.state_dict(), 2).items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "x.safetensors"))
    loaded = load_controlnet(tmp_path / "x.safetensors")
    sample, t, ehs, hint, added = unet_inputs(unet)
    a, b = cn(sample, t, ehs, hint, added_cond_kwargs=added), loaded(sample, t, ehs, hint, added_cond_kwargs=added)
    assert torch.equal(a.mid, b.mid)  # the same heads, groups and depths, so the same numbers


@pytest.mark.parametrize(
    "unet_config",
    [
        dict(cross_attention_dim=768),
        dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
        dict(block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
             attention_head_dim=(5, 10, 20), use_linear_projection=True, transformer_layers_per_block=(1, 2, 10),
             addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
    ],
    ids=["sd15", "sd21", "sdxl"],
)
def test_full_size_architectures_are_inferred_exactly(unet_config):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    cn = ControlNet.from_unet(unet)
    inferred = infer_config(cn.state_dict())
    with torch.device("meta"):
        rebuilt = ControlNet(**inferred)
    for key in ("block_out_channels", "down_block_types", "layers_per_block", "cross_attention_dim",
                "use_linear_projection", "addition_embed_type", "conditioning_embedding_out_channels"):
        assert tuple(rebuilt.config[key]) == tuple(cn.config[key]) if isinstance(cn.config[key], (list, tuple)) \
            else rebuilt.config[key] == cn.config[key], key
    heads = [a.transformer_blocks[0].attn1.heads for a in cn.modules() if hasattr(a, "transformer_blocks")]
    heads_rebuilt = [a.transformer_blocks[0].attn1.heads for a in rebuilt.modules() if hasattr(a, "transformer_blocks")]
    assert heads == heads_rebuilt
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == {k: tuple(v.shape) for k, v in cn.state_dict().items()}


def _original_implementation(checkpoint: dict, unet_params: dict) -> ControlNetModel:
    """The ControlNet the original code builds from a cldm yaml, as diffusers' single-file loader
    reads that yaml (`num_heads`, `num_head_channels`, `use_linear_in_transformer`) and its weights."""
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    original = {"model": {"params": {"control_stage_config": {"params": unet_params}, "unet_config": {"params": unet_params},
                                     "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers deprecates image_size, which it needs without a full SD file
        unet_config = create_unet_diffusers_config_from_ldm(original, checkpoint, image_size=512)
    keys = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "transformer_layers_per_block")
    config = {k: unet_config[k] for k in keys}
    model = ControlNetModel(**config).eval()
    model.load_state_dict(convert_controlnet_checkpoint(checkpoint, config))
    return model


def test_sd1_layout_with_another_text_width_has_the_sd1_heads_of_the_original_code(tmp_path):
    """Convolutional proj_in (the SD 1.x code, `num_heads: 8`) but a 32-wide text encoder: the head
    count follows the projections the tensors show, not the text width (it used to be 1 head)."""
    unet = UNet2DConditionModel(**{**tiny_unet_config("sd1", exact=True), "cross_attention_dim": 32})
    cn = ControlNet.from_unet(unet).eval()  # the published 8-conv hint block, which diffusers' converter expects
    randomize_connections(cn)
    checkpoint = {"control_model." + k: v.contiguous() for k, v in ours_to_original(cn.state_dict(), 2).items()}
    save_file(checkpoint, str(tmp_path / "control_sd15_custom_text.safetensors"))  # no stored config
    params = dict(in_channels=4, out_channels=4, hint_channels=3, model_channels=32, attention_resolutions=[1],
                  num_res_blocks=2, channel_mult=[1, 2], num_heads=8, use_spatial_transformer=True,
                  transformer_depth=1, context_dim=32, legacy=False)
    reference = _original_implementation(checkpoint, params)
    loaded = load_controlnet(tmp_path / "control_sd15_custom_text.safetensors")
    sample, t, ehs, hint, _ = unet_inputs(unet, size=8, vae_scale_factor=8)
    down, mid = reference(sample, t, ehs, hint, return_dict=False)
    ours = loaded(sample, t, ehs, hint)
    for a, b in zip((*ours.down, ours.mid), (*down, mid)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    one_head = load_controlnet(tmp_path / "control_sd15_custom_text.safetensors", config={"attention_head_dim": 1})
    assert (one_head(sample, t, ehs, hint).mid - mid).abs().max() > 1e-3  # the heads are visible in the output


def test_original_yaml_config_overrides(tmp_path):
    unet, cn = make("sd1")
    path = tmp_path / "x.pth"
    torch.save({"control_model." + k: v for k, v in ours_to_original(cn.state_dict(), 2).items()}, path)
    cldm = {"model": {"params": {"control_stage_config": {"params": {
        "model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [1], "num_res_blocks": 2,
        "num_heads": 4, "context_dim": 32, "hint_channels": 3, "in_channels": 4}}}}}
    (tmp_path / "cldm.yaml").write_text(yaml.safe_dump(cldm))
    loaded = load_controlnet(path, config=str(tmp_path / "cldm.yaml"))
    assert same_weights(loaded, cn)
    assert loaded.config.attention_head_dim in (4, [4, 4], (4, 4))


def test_shuffle_file_name_turns_global_pooling_on(tmp_path):
    _, cn = make("sd1", exact=True)
    save_file({k: v.contiguous() for k, v in ours_to_original(cn.state_dict(), 2).items()},
              str(tmp_path / "control_v11e_sd15_shuffle.safetensors"))
    assert load_controlnet(tmp_path / "control_v11e_sd15_shuffle.safetensors").config.global_pool_conditions


def test_dtype_conversion_on_save_and_load(tmp_path):
    _, cn = make("sd1")
    path = save_controlnet(cn, tmp_path / "h.safetensors", layout="original", dtype="fp16")
    assert {v.dtype for v in read_tensors(path)[0].values()} == {torch.float16}
    # loaded in float32 unless asked (diffusers' convention): fp16 convolutions are slow on a CPU
    loaded = load_controlnet(path)
    assert loaded.dtype == torch.float32 and loaded.loaded_from["dtype"] == torch.float16
    assert torch.equal(loaded.conv_in.weight, cn.conv_in.weight.half().float())


@pytest.mark.parametrize("spelling", ["fp16", "float16", "half", "torch.float16", torch.float16, "FP16"])
def test_every_dtype_spelling_is_accepted_on_save_and_load(spelling, tmp_path):
    _, cn = make("sd1")
    path = save_controlnet(cn, tmp_path / "h.safetensors", dtype=spelling)
    assert {v.dtype for v in read_tensors(path)[0].values()} == {torch.float16}
    assert load_controlnet(path, dtype=spelling).dtype == torch.float16
    assert load_controlnet(path, dtype="bfloat16").dtype == torch.bfloat16


# ------------------------------------------------------------------ bad files


def test_random_bytes(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_controlnet(path)
    path = tmp_path / "junk.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_controlnet(path)


def test_truncated_and_empty_files(tmp_path):
    _, cn = make("sd1")
    good = save_controlnet(cn, tmp_path / "good.safetensors", layout="original")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_controlnet(cut)
    torch.save(read_tensors(good)[0], tmp_path / "good.pth")
    cut_pth = tmp_path / "cut.pth"
    cut_pth.write_bytes((tmp_path / "good.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_controlnet(cut_pth)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_controlnet(tmp_path / "empty.ckpt")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_a_pickle_that_would_execute_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"control_model.zero_convs.0.0.weight": torch.zeros(1), "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_controlnet(path)
    assert not (tmp_path / "EXPLOITED").exists()
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(CheckpointError):
        load_controlnet(raw)
    assert not (tmp_path / "EXPLOITED").exists()


def test_missing_and_misshaped_keys_are_named(tmp_path):
    _, cn = make("sd1")
    state = {"control_model." + k: v for k, v in ours_to_original(cn.state_dict(), 2).items()}
    config = {"controlnet_config": json.dumps(dict(cn.config))}
    missing = dict(state)
    del missing["control_model.zero_convs.3.0.weight"]
    save_file(missing, str(tmp_path / "m.safetensors"), metadata=config)
    with pytest.raises(CheckpointError, match=r"original layout.*1 missing.*controlnet_down_blocks\.3\.weight"):
        load_controlnet(tmp_path / "m.safetensors")
    wrong = dict(state)
    wrong["control_model.middle_block_out.0.weight"] = torch.zeros(3, 3, 1, 1)
    save_file(wrong, str(tmp_path / "w.safetensors"), metadata=config)
    with pytest.raises(CheckpointError, match="mis-shaped.*controlnet_mid_block.weight"):
        load_controlnet(tmp_path / "w.safetensors")


def test_wrong_family_and_wrong_kind_of_file(tmp_path):
    _, sd1 = make("sd1")
    _, xl = make("sdxl")
    path = save_controlnet(xl, tmp_path / "xl.safetensors", layout="original")
    with pytest.raises(CheckpointError, match="does not match"):
        load_controlnet(path, config=dict(sd1.config))  # told it is another model
    unet = tiny_unet("sd1")
    save_file({"model.diffusion_model.input_blocks.0.0.weight": unet.conv_in.weight.contiguous()}, str(tmp_path / "sd.safetensors"))
    with pytest.raises(CheckpointError, match="Stable Diffusion checkpoint without a ControlNet"):
        load_controlnet(tmp_path / "sd.safetensors")
    save_file({"adapter.body.0.resnets.0.block1.weight": torch.zeros(2)}, str(tmp_path / "t2i.safetensors"))
    with pytest.raises(CheckpointError, match="T2I-Adapter"):
        load_controlnet(tmp_path / "t2i.safetensors")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_controlnet(tmp_path / "folder")
    with pytest.raises(CheckpointError, match="no such file"):
        load_controlnet(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------ transfer


def test_transfer_adds_the_community_offset_to_copied_weights_only(tmp_path):
    base, cn = make("sd1")
    community = tiny_unet("sd1")
    with torch.no_grad():
        for p in community.parameters():
            p.add_(0.01 * torch.randn_like(p))
    base_file = tmp_path / "base.safetensors"
    base_sd = {"model.diffusion_model." + k: v for k, v in ours_to_original(
        {k: v for k, v in base.state_dict().items() if k.split(".")[0] in ("conv_in", "time_embedding", "down_blocks", "mid_block")}, 2).items()}
    save_file({k: v.contiguous() for k, v in base_sd.items()}, str(base_file))  # single-file SD layout
    community.save_pretrained(tmp_path / "community" / "unet")  # diffusers pipeline layout
    before = {k: v.clone() for k, v in cn.state_dict().items()}
    moved_cn, moved = transfer_control(cn, read_unet_encoder(base_file), read_unet_encoder(tmp_path / "community"))
    after = moved_cn.state_dict()
    assert moved == len([k for k in before if k in base.state_dict()])
    for k, v in after.items():
        if k in base.state_dict():
            torch.testing.assert_close(v, before[k] + community.state_dict()[k] - base.state_dict()[k])
        else:
            assert torch.equal(v, before[k])  # hint encoder, zero convs untouched
