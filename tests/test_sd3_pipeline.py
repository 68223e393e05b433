"""Sampling an SD3 base with ControlNets equals diffusers' `StableDiffusion3ControlNetPipeline` on tiny
random models (latents and pictures, ≤ 1e-4), from prompt embeddings: InstantX (zero pooled, no VAE
shift) with a window, SAI SD3.5 (the base's positional embedding, no text stream), two ControlNets,
no guidance; the SAI hint transforms act; bad inputs get one line before any compute.

diffusers draws the control latent from the unseeded global RNG; we take the posterior mean. The
tiny VAE's log-variance is pinned at its floor (σ = e^-15) so both are the same latent."""

from __future__ import annotations

import copy

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3ControlNetModel,
    SD3MultiControlNetModel,
    SD3Transformer2DModel,
    StableDiffusion3ControlNetPipeline,
)

from controlnet.errors import InputError
from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet
from controlnet.pipeline.sd3 import SD3Control, sample_sd3
from tiny_models import randomized

TOL = 1e-4
SIZE = 8  # pixels; the tiny VAE does not downsample
BASE = dict(sample_size=32, patch_size=1, in_channels=8, num_layers=4, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=8, qk_norm="rms_norm")
SAI_BASE = dict(BASE, attention_head_dim=64, num_attention_heads=2, caption_projection_dim=128, qk_norm=None)
NETS = {"instantx": (BASE, dict(BASE, num_layers=3)), "instantx-b": (BASE, dict(BASE, num_layers=2)),
        "inpaint": (BASE, dict(BASE, num_layers=2, extra_conditioning_channels=1)),
        "sai": (SAI_BASE, dict(sample_size=32, patch_size=1, in_channels=8, num_layers=2, attention_head_dim=64,
                               num_attention_heads=2, joint_attention_dim=None, caption_projection_dim=128,
                               pooled_projection_dim=64, out_channels=8, pos_embed_max_size=None, pos_embed_type=None,
                               use_pos_embed=False, force_zeros_for_pooled_projection=False))}


def ours_of(ref, **config) -> SD3ControlNet:
    net = SD3ControlNet(**{**ref.config, **config}).eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    return net


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4,), layers_per_block=1, latent_channels=8, norm_num_groups=1,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035).eval()
    with torch.no_grad():  # log-variance at its floor: a posterior sample is its mean (see the module note)
        vae.encoder.conv_out.weight[8:] = 0
        vae.encoder.conv_out.bias[8:] = -40
    bases = {"sd3": randomized(SD3Transformer2DModel(**BASE), 1), "sai": randomized(SD3Transformer2DModel(**SAI_BASE), 2)}
    refs = {name: randomized(SD3ControlNetModel(**cfg), seed) for seed, (name, (_, cfg)) in enumerate(NETS.items(), 3)}
    rng = np.random.RandomState(0)
    hints = [PIL.Image.fromarray((rng.rand(SIZE, SIZE, 3) * 255).astype(np.uint8)) for _ in range(2)]
    g = torch.Generator().manual_seed(9)
    text = dict(prompt_embeds=torch.randn(1, 6, 32, generator=g), pooled_prompt_embeds=torch.randn(1, 64, generator=g),
                negative_prompt_embeds=torch.randn(1, 6, 32, generator=g),
                negative_pooled_prompt_embeds=torch.randn(1, 64, generator=g))
    return vae, bases, refs, hints, text


def _scheduler():
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def _diffusers(vae, base, controlnet, text, output_type, guidance=5.0, **kwargs):
    pipe = StableDiffusion3ControlNetPipeline(transformer=base, scheduler=_scheduler(), vae=vae, text_encoder=None,
                                              tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                              tokenizer_3=None, controlnet=copy.deepcopy(controlnet))
    pipe.set_progress_bar_config(disable=True)
    return pipe(**text, height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=guidance, output_type=output_type,
                generator=torch.Generator().manual_seed(0), **kwargs).images


def _ours(vae, base, controls, text, output_type, guidance=5.0):
    return sample_sd3(base, vae, _scheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"], controls,
                      negative_prompt_embeds=text["negative_prompt_embeds"],
                      negative_pooled_prompt_embeds=text["negative_pooled_prompt_embeds"], width=SIZE, height=SIZE,
                      steps=3, guidance_scale=guidance, generator=torch.Generator().manual_seed(0), output_type=output_type)


def _agree(a, b, plain=None):
    assert a.shape == b.shape and float((a - b).abs().max()) <= TOL
    if plain is not None:
        assert float((a - plain).abs().max()) > 100 * TOL


@pytest.mark.parametrize("output_type", ["latent", "pt"])
@pytest.mark.parametrize("name", ["instantx", "sai"])
def test_one_controlnet_with_a_window_equals_diffusers(parts, name, output_type):
    vae, bases, refs, hints, text = parts
    base = bases["sai" if name == "sai" else "sd3"]
    want = _diffusers(vae, base, refs[name], text, output_type, control_image=hints[0],
                      controlnet_conditioning_scale=0.7, control_guidance_end=0.6)
    got = _ours(vae, base, [SD3Control(ours_of(refs[name]), hints[0], 0.7, 0.0, 0.6)], text, output_type)
    _agree(want, got, _ours(vae, base, [], text, output_type))


def test_two_controlnets_and_no_guidance_equal_diffusers(parts):
    vae, bases, refs, hints, text = parts
    multi = SD3MultiControlNetModel([refs["instantx"], refs["instantx-b"]])
    for guidance in (5.0, 1.0):
        want = _diffusers(vae, bases["sd3"], multi, text, "latent", guidance, control_image=hints,
                          controlnet_conditioning_scale=[0.5, 0.9], control_guidance_start=[0.0, 0.3],
                          control_guidance_end=[0.7, 1.0])
        units = [SD3Control(ours_of(refs["instantx"]), hints[0], 0.5, 0.0, 0.7),
                 SD3Control(ours_of(refs["instantx-b"]), hints[1], 0.9, 0.3, 1.0)]
        _agree(want, _ours(vae, bases["sd3"], units, text, "latent", guidance))


@pytest.mark.parametrize("output_type", ["latent", "pt"])
def test_the_inpainting_controlnet_equals_diffusers(parts, output_type):
    from diffusers import StableDiffusion3ControlNetInpaintingPipeline

    vae, bases, refs, hints, text = parts
    mask = PIL.Image.fromarray(np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((SIZE // 2, SIZE // 2), np.uint8)))
    pipe = StableDiffusion3ControlNetInpaintingPipeline(
        transformer=bases["sd3"], scheduler=_scheduler(), vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, controlnet=copy.deepcopy(refs["inpaint"]))
    pipe.set_progress_bar_config(disable=True)
    want = pipe(**text, control_image=hints[0], control_mask=mask, height=SIZE, width=SIZE, num_inference_steps=3,
                guidance_scale=5.0, controlnet_conditioning_scale=0.9, output_type=output_type,
                generator=torch.Generator().manual_seed(0)).images
    got = _ours(vae, bases["sd3"], [SD3Control(ours_of(refs["inpaint"]), hints[0], 0.9, mask=mask)], text, output_type)
    _agree(want, got, _ours(vae, bases["sd3"], [], text, output_type))


def test_the_sai_depth_net_sees_its_hint_inverted(parts):
    vae, bases, refs, hints, text = parts
    depth = _ours(vae, bases["sai"], [SD3Control(ours_of(refs["sai"], hint_transform="invert"), hints[0])], text, "latent")
    plain = _ours(vae, bases["sai"], [SD3Control(ours_of(refs["sai"]), PIL.ImageOps.invert(hints[0]))], text, "latent")
    _agree(depth, plain, _ours(vae, bases["sai"], [SD3Control(ours_of(refs["sai"]), hints[0])], text, "latent"))


@pytest.mark.parametrize("change,message", [
    (dict(start=0.8, end=0.2), "start and end"),
    (dict(controlnet="flux"), "not an SD3 ControlNet"),
    (dict(controlnet="sai"), "made for another base model"),
    (dict(controlnet="inpaint"), "needs the mask"),
    (dict(mask=PIL.Image.new("L", (SIZE, SIZE))), "takes no mask"),
])
def test_bad_controls_get_one_line_before_any_compute(parts, change, message):
    vae, bases, refs, hints, text = parts
    nets = {"flux": lambda: FluxControlNet(num_layers=1, num_single_layers=0, attention_head_dim=16, num_attention_heads=2,
                                           joint_attention_dim=32, pooled_projection_dim=64, in_channels=32,
                                           axes_dims_rope=(4, 4, 8)),
            "sai": lambda: ours_of(refs["sai"]),
            "inpaint": lambda: SD3ControlNet(**dict(NETS["instantx"][1], extra_conditioning_channels=1))}
    if "controlnet" in change:
        change["controlnet"] = nets[change["controlnet"]]()
    unit = SD3Control(**{**dict(controlnet=ours_of(refs["instantx"]), image=hints[0]), **change})
    with pytest.raises(InputError, match=message):
        _ours(vae, bases["sd3"], [unit], text, "latent")


def test_guidance_without_negative_embeddings_and_odd_sizes_are_refused(parts):
    vae, bases, _, _, text = parts
    with pytest.raises(InputError, match="negative_prompt_embeds"):
        sample_sd3(bases["sd3"], vae, _scheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                   width=SIZE, height=SIZE, steps=1, guidance_scale=5.0)
    base = SD3Transformer2DModel(**dict(BASE, patch_size=2))
    with pytest.raises(InputError, match="multiples of 2"):
        sample_sd3(base, vae, _scheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                   width=7, height=8, steps=1, guidance_scale=1.0)


# ------------------------------------------------------------------------------------------ from text, from a folder

@pytest.fixture(scope="module")
def sd3_folder(parts, tmp_path_factory):
    """A tiny SD3 base written as diffusers writes it (StableDiffusion3Pipeline.save_pretrained)."""
    from diffusers import StableDiffusion3Pipeline
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from controlnet.offline_tokenizer import offline_clip_tokenizer
    from controlnet.tiny import BYTE_VOCAB, clip_text_config, tiny_text_kwargs

    vae, bases, _, _, _ = parts
    root = tmp_path_factory.mktemp("sd3")
    words = ["<pad>", "</s>", "<unk>", "a", "red", "cube", "blue", "ball", "on", "grass", "blurry"]
    t5_tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t5_tok.pre_tokenizer = Whitespace()
    torch.manual_seed(40)
    clips = [CLIPTextModelWithProjection(clip_text_config(BYTE_VOCAB, projection_dim=32, **tiny_text_kwargs(32, layers=2))).eval()
             for _ in range(2)]
    t5 = T5EncoderModel(T5Config(vocab_size=len(words), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0)).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=bases["sd3"], scheduler=_scheduler(), vae=vae, text_encoder=clips[0], text_encoder_2=clips[1],
        text_encoder_3=t5, tokenizer=offline_clip_tokenizer(root / "t1"), tokenizer_2=offline_clip_tokenizer(root / "t2"),
        tokenizer_3=PreTrainedTokenizerFast(tokenizer_object=t5_tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"))
    pipe.save_pretrained(root / "base")
    return root / "base", pipe


def test_an_sd3_folder_from_a_prompt_equals_diffusers(parts, sd3_folder):
    from controlnet.pipeline.sd3 import SD3Base

    _, _, refs, hints, _ = parts
    folder, pipe = sd3_folder
    ref = StableDiffusion3ControlNetPipeline(**pipe.components, controlnet=copy.deepcopy(refs["instantx"]))
    ref.set_progress_bar_config(disable=True)
    base = SD3Base.from_pretrained(folder)
    for negative in ("", "blurry"):
        want = ref(prompt="a red cube on grass", negative_prompt=negative, control_image=hints[0], height=SIZE, width=SIZE,
                   num_inference_steps=3, guidance_scale=5.0, max_sequence_length=12, output_type="pt",
                   controlnet_conditioning_scale=0.8, generator=torch.Generator().manual_seed(0)).images
        got = base("a red cube on grass", [SD3Control(ours_of(refs["instantx"]), hints[0], 0.8)], negative_prompt=negative,
                   width=SIZE, height=SIZE, steps=3, guidance_scale=5.0, max_sequence_length=12,
                   generator=torch.Generator().manual_seed(0))
        _agree(want, got)


def test_an_sd3_folder_is_refused_by_the_unet_pipeline_and_needs_its_t5(sd3_folder, tmp_path):
    import shutil

    from controlnet.errors import MissingFileError
    from controlnet.pipeline import ControlPipeline
    from controlnet.pipeline.sd3 import SD3Base

    with pytest.raises(InputError, match="is an SD3 base model"):
        ControlPipeline.from_pretrained(sd3_folder[0])
    shutil.copytree(sd3_folder[0], tmp_path / "base")
    shutil.rmtree(tmp_path / "base" / "text_encoder_3")
    with pytest.raises(MissingFileError, match="text_encoder_3"):
        SD3Base.from_pretrained(tmp_path / "base")
