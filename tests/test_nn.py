"""The network: parity with diffusers, exactness of zero convs, parameter counts, options."""

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from controlnet.nn import (
    ControlNet,
    HintEncoder,
    connection_shapes,
    connections,
    controlled_unet,
    count_parameters,
    soft_scales,
    zero_conv,
)
from controlnet.nn.unet_parts import unet_conditioning, unet_encoder
from controlnet.tiny import FAMILIES, randomize_connections, tiny_unet, unet_inputs


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference tests: no autograd (per test, not process-wide, so training tests keep theirs)."""
    with torch.no_grad():
        yield


def run_both(cn, unet, family):
    sample, t, ehs, hint, added = unet_inputs(unet)
    ours = cn(sample, t, ehs, hint, added_cond_kwargs=added)
    ref_down, ref_mid = cn.to_diffusers()(sample, t, ehs, hint, added_cond_kwargs=added, return_dict=False)
    return ours, (ref_down, ref_mid), (sample, t, ehs, added)


@pytest.mark.parametrize("family", FAMILIES)
def test_residuals_and_controlled_unet_match_diffusers(family):
    unet = tiny_unet(family)
    cn = ControlNet.from_unet(unet, vae_scale_factor=2).eval()
    randomize_connections(cn)
    ours, (ref_down, ref_mid), (sample, t, ehs, added) = run_both(cn, unet, family)
    assert len(ours.down) == len(ref_down) == cn.num_connections - 1
    for a, b in zip(ours.down, ref_down):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.mid, ref_mid, atol=1e-5, rtol=0)
    assert ours.mid.abs().max() > 1e-3  # the control is visible, so the comparison means something

    out = controlled_unet(unet, sample, t, ehs, [(ours, 1.0)], added_cond_kwargs=added)
    ref = unet(sample, t, ehs, added_cond_kwargs=added, down_block_additional_residuals=ref_down,
               mid_block_additional_residual=ref_mid).sample
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    plain = unet(sample, t, ehs, added_cond_kwargs=added).sample
    assert (out - plain).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_from_unet_matches_diffusers_from_unet(family):
    unet = tiny_unet(family)
    ours = ControlNet.from_unet(unet, vae_scale_factor=2)
    ref = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert ours_sd.keys() == ref_sd.keys()
    copied = [k for k in ours_sd if not k.startswith(("controlnet_cond_embedding", "controlnet_down", "controlnet_mid"))]
    assert copied and all(torch.equal(ours_sd[k], ref_sd[k]) for k in copied)
    assert all(torch.equal(ours_sd[k], unet.state_dict()[k]) for k in copied)


@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_controlnet_leaves_unet_output_bit_identical(family):
    unet = tiny_unet(family)
    cn = ControlNet.from_unet(unet, vae_scale_factor=2)
    sample, t, ehs, hint, added = unet_inputs(unet)
    residuals = cn(sample, t, ehs, hint, added_cond_kwargs=added)
    out = controlled_unet(unet, sample, t, ehs, [(residuals, 1.0), (residuals, soft_scales(cn.num_connections))],
                          added_cond_kwargs=added)
    assert torch.equal(out, unet(sample, t, ehs, added_cond_kwargs=added).sample)


@pytest.mark.parametrize(
    "config, expected",
    [
        (dict(cross_attention_dim=768), 361_279_120),  # SD 1.5 (reference §1.6 and diffusers)
        (dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True), 364_228_240),
    ],
)
def test_parameter_count_of_full_size_models_on_meta(config, expected):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        ref = ControlNetModel.from_unet(unet)
    cn = ControlNet.from_unet(unet)
    assert count_parameters(cn) == count_parameters(ref) == expected


def test_sdxl_parameter_count_on_meta_equals_diffusers():
    config = dict(
        block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
        attention_head_dim=(5, 10, 20), use_linear_projection=True, transformer_layers_per_block=(1, 2, 10),
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    )
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        ref = ControlNetModel.from_unet(unet)
    cn = ControlNet.from_unet(unet)
    assert cn.num_connections == 10
    assert count_parameters(cn) == count_parameters(ref) > 1_200_000_000


def test_zero_conv_starts_at_zero_and_still_learns():
    conv = zero_conv(8)
    assert torch.count_nonzero(conv.weight) == 0 and torch.count_nonzero(conv.bias) == 0
    with torch.enable_grad():
        x = torch.randn(2, 8, 4, 4)
        conv(x).sum().backward()
    assert conv.weight.grad.abs().sum() > 0  # dL/dW = input, non-zero


@pytest.mark.parametrize("factor, n_stride2", [(8, 3), (4, 2), (2, 1), (16, 4)])
def test_hint_encoder_follows_vae_scale_factor(factor, n_stride2):
    unet = tiny_unet("sd1")
    cn = ControlNet.from_unet(unet, vae_scale_factor=factor)
    strides = [b.stride[0] for b in cn.controlnet_cond_embedding.blocks]
    assert strides.count(2) == n_stride2 and cn.hint_downscale == factor
    emb = cn.embed_hint(torch.rand(1, 3, 8 * factor, 8 * factor))
    assert emb.shape == (1, 32, 8, 8)


def test_published_hint_encoder_layout():
    enc = HintEncoder(320)
    shapes = [tuple(enc.conv_in.weight.shape)] + [tuple(b.weight.shape) for b in enc.blocks] + [tuple(enc.conv_out.weight.shape)]
    assert shapes == [(16, 3, 3, 3), (16, 16, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (96, 32, 3, 3),
                      (96, 96, 3, 3), (256, 96, 3, 3), (320, 256, 3, 3)]
    assert torch.count_nonzero(enc.conv_out.weight) == 0
    assert enc(torch.rand(1, 3, 512, 512)).shape == (1, 320, 64, 64)


def test_paper_hint_encoder_variant_lands_on_the_latent_grid():
    enc = HintEncoder(64, widths=(16, 32, 64, 128), kind="paper")
    assert enc.conv_in.weight.shape[-1] == 4
    assert enc(torch.rand(1, 3, 64, 64)).shape == (1, 64, 8, 8)


def test_precomputed_hint_embedding_equals_hint_and_tiles_over_cfg_batch():
    unet = tiny_unet("sd1")
    cn = ControlNet.from_unet(unet, vae_scale_factor=2).eval()
    randomize_connections(cn)
    sample, t, ehs, hint, _ = unet_inputs(unet, batch=1)
    direct = cn(sample, t, ehs, hint)
    via_emb = cn(sample, t, ehs, hint_embedding=cn.embed_hint(hint))
    assert all(torch.equal(a, b) for a, b in zip(direct.down, via_emb.down))
    doubled = cn(sample.repeat(2, 1, 1, 1), t, ehs.repeat(2, 1, 1), hint)  # one hint, CFG batch of 2
    torch.testing.assert_close(doubled.mid[0], doubled.mid[1])


def test_hint_of_wrong_size_is_rejected_with_the_reason():
    unet = tiny_unet("sd1")
    cn = ControlNet.from_unet(unet, vae_scale_factor=2)
    sample, t, ehs, _, _ = unet_inputs(unet)
    with pytest.raises(ValueError, match="2x the latent size"):
        cn(sample, t, ehs, torch.rand(2, 3, 16, 16))


def test_global_pool_gives_per_channel_residuals():
    unet = tiny_unet("sd1")
    cn = ControlNet.from_unet(unet, vae_scale_factor=2, global_pool=True)
    randomize_connections(cn)
    sample, t, ehs, hint, _ = unet_inputs(unet)
    res = cn(sample, t, ehs, hint)
    assert all(d.shape[-2:] == (1, 1) for d in res.down) and res.mid.shape[-2:] == (1, 1)
    controlled_unet(unet, sample, t, ehs, [(res, 1.0)])  # broadcasts over the skip connections


def test_ablations_build_and_behave():
    unet = tiny_unet("sd1")
    sample, t, ehs, hint, _ = unet_inputs(unet)
    plain = unet(sample, t, ehs).sample
    gaussian = ControlNet.from_unet(unet, vae_scale_factor=2, connection_init="gaussian")
    out = controlled_unet(unet, sample, t, ehs, [(gaussian(sample, t, ehs, hint), 1.0)])
    assert (out - plain).abs().max() > 1e-2  # random connections disturb the locked model at step 0

    lite = ControlNet.from_unet(unet, vae_scale_factor=2, copy="lite")
    assert count_parameters(lite) < count_parameters(ControlNet.from_unet(unet, vae_scale_factor=2)) / 2
    assert torch.equal(controlled_unet(unet, sample, t, ehs, [(lite(sample, t, ehs, hint), 1.0)]), plain)
    with pytest.raises(ValueError, match="no diffusers equivalent"):
        lite.to_diffusers()


def test_several_controlnets_with_per_connection_scales_add_up():
    unet = tiny_unet("sd1")
    a, b = ControlNet.from_unet(unet, vae_scale_factor=2), ControlNet.from_unet(unet, vae_scale_factor=2)
    randomize_connections(a, seed=1)
    randomize_connections(b, seed=2)
    sample, t, ehs, hint, _ = unet_inputs(unet)
    ra, rb = a(sample, t, ehs, hint), b(sample, t, ehs, hint.flip(-1))
    scales = torch.linspace(0.1, 1.0, a.num_connections).tolist()
    out = controlled_unet(unet, sample, t, ehs, [(ra, 0.5), (rb, scales)])
    down = [0.5 * x + s * y for x, y, s in zip(ra.down, rb.down, scales)]
    mid = 0.5 * ra.mid + scales[-1] * rb.mid
    ref = unet(sample, t, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_scales_of_one_are_skipped_and_a_wrong_count_still_refused():
    """x * 1.0 == x, so unit scales return the residuals themselves (no kernels); others multiply."""
    from controlnet.nn import ControlResiduals

    res = ControlResiduals((torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)), torch.randn(1, 2, 1, 1))
    assert res.scaled(1.0) is res and res.scaled([1, 1.0, 1]) is res
    assert res.scaled([1.0, 1.0, 0.5]).mid.equal(0.5 * res.mid)
    assert res.scaled([1.0, 1.0, torch.tensor(1.0)]) is not res  # tensors (masks) always broadcast
    with pytest.raises(ValueError, match="got 2 scales for 3"):
        res.scaled([1.0, 1.0])


def test_controlnet_for_another_family_is_rejected():
    sd1, sd2 = tiny_unet("sd1"), tiny_unet("sd2", exact=True)  # widths 32/64 vs 64/128
    cn = ControlNet.from_unet(sd2, vae_scale_factor=2)
    sample, t, ehs, hint, added = unet_inputs(sd2)
    res = cn(sample, t, ehs, hint, added_cond_kwargs=added)
    with pytest.raises(ValueError, match="different base model"):
        controlled_unet(sd1, sample, t, torch.randn(2, 7, 32), [(res, 1.0)])
    with pytest.raises(ValueError, match="2 scales for 7"):
        controlled_unet(sd1, sample, t, torch.randn(2, 7, 32), [(ControlNet.from_unet(sd1, vae_scale_factor=2)(
            sample, t, torch.randn(2, 7, 32), hint), [1.0, 1.0])])


# ------------------------------------------------------------------ connections and the one controlled-U-Net path


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [16, 15])  # an odd latent side: downsamplers round up
def test_connections_describe_the_features_every_part_produces(family, size):
    unet = tiny_unet(family)
    cn = ControlNet.from_unet(unet, vae_scale_factor=2).eval()
    lite = ControlNet.from_unet(unet, vae_scale_factor=2, copy="lite")
    sample, t, ehs, _, added = unet_inputs(unet, size=size)
    hint = torch.rand(2, 3, 2 * size, 2 * size)
    links = connections(unet.config)
    assert links == connections(cn.config) and [c.index for c in links] == list(range(cn.num_connections))
    expected = [(2, *shape) for shape in connection_shapes(unet.config, (size, size))]
    emb, attn = unet_conditioning(unet, sample, t, ehs, added)
    skips, mid = unet_encoder(unet, sample, emb, attn)
    for features in ((*skips, mid), (*(r := cn(sample, t, ehs, hint, added_cond_kwargs=added)).down, r.mid),
                     (*(r := lite(sample, t, ehs, hint)).down, r.mid)):
        assert [tuple(f.shape) for f in features] == expected
    assert [c.stride for c in links[1:-1]] == [conv.stride[0] for conv in lite.lite.convs]


def test_training_and_sampling_share_one_path_with_the_same_numbers_and_gradients():
    unet = tiny_unet("sdxl")
    cn = ControlNet.from_unet(unet, vae_scale_factor=2)
    randomize_connections(cn)
    sample, t, ehs, hint, added = unet_inputs(unet)
    grads, outputs = [], []
    with torch.enable_grad():
        for options in ({}, {"lock_encoder": True, "checkpoint_decoder": True}):
            cn.zero_grad()
            out = controlled_unet(unet, sample, t, ehs, [(cn(sample, t, ehs, hint, added_cond_kwargs=added), 1.0)],
                                  added_cond_kwargs=added, **options)
            out.square().mean().backward()
            grads.append([p.grad.clone() for p in cn.parameters() if p.grad is not None])
            outputs.append(out.detach())
    assert torch.equal(outputs[0], outputs[1])
    assert len(grads[0]) == len(grads[1]) > 0 and any(g.abs().max() > 0 for g in grads[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
