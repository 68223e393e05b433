"""Sampling a Flux base with ControlNets equals diffusers' `FluxControlNetPipeline` /
`FluxControlPipeline` on tiny random models (latents and pictures, ≤ 1e-4), from prompt embeddings:
one ControlNet with a window, a union net with a mode, an XLabs net, several ControlNets, true CFG,
and a FLUX.1 Control base. Bad inputs get one line before any compute."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxControlPipeline,
    FluxMultiControlNetModel,
    FluxTransformer2DModel,
)

from controlnet.errors import InputError
from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet
from controlnet.pipeline.flux import FluxControl, sample_flux
from tiny_models import randomized

TOL = 1e-4
FLUX_BASE = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                 guidance_embeds=True)
NETS = {"instantx": dict(FLUX_BASE, num_layers=1, num_single_layers=2),
        "instantx-b": dict(FLUX_BASE, num_layers=1, num_single_layers=2),
        "union": dict(FLUX_BASE, num_layers=2, num_single_layers=0, num_mode=10),
        "xlabs": dict(FLUX_BASE, num_layers=2, num_single_layers=0, patch_size=2, conditioning_embedding_channels=4)}
SIZE = 64  # pixels; the tiny VAE downsamples 8× as Flux's does: 4×4 tokens after 2×2 packing


def ours_of(ref) -> FluxControlNet:
    net = FluxControlNet(**ref.config).eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    return net


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=4, norm_num_groups=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035).eval()
    base = randomized(FluxTransformer2DModel(**FLUX_BASE), 1)
    refs = {name: randomized(FluxControlNetModel(**cfg), seed) for seed, (name, cfg) in enumerate(NETS.items(), 2)}
    rng = np.random.RandomState(0)
    hints = [PIL.Image.fromarray((rng.rand(SIZE, SIZE, 3) * 255).astype(np.uint8)) for _ in range(2)]
    g = torch.Generator().manual_seed(9)
    text = dict(prompt_embeds=torch.randn(1, 4, 32, generator=g), pooled_prompt_embeds=torch.randn(1, 32, generator=g))
    negative = dict(negative_prompt_embeds=torch.randn(1, 4, 32, generator=g),
                    negative_pooled_prompt_embeds=torch.randn(1, 32, generator=g))
    return vae, base, refs, hints, text, negative


def _diffusers(vae, base, controlnet, text, output_type, **kwargs):
    pipe = FluxControlNetPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None, transformer=base, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe(**text, height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=3.5, output_type=output_type,
                generator=torch.Generator().manual_seed(0), **kwargs).images


def _ours(vae, base, controls, text, output_type, **kwargs):
    return sample_flux(base, vae, FlowMatchEulerDiscreteScheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                       controls, width=SIZE, height=SIZE, steps=3, generator=torch.Generator().manual_seed(0),
                       output_type=output_type, **kwargs)


def _agree(a, b, plain=None):
    assert a.shape == b.shape and float((a - b).abs().max()) <= TOL
    if plain is not None:  # the control really acts
        assert float((a - plain).abs().max()) > 100 * TOL


@pytest.mark.parametrize("output_type", ["latent", "pt"])
@pytest.mark.parametrize("name,mode", [("instantx", None), ("union", 4), ("xlabs", None)])
def test_one_controlnet_with_a_window_equals_diffusers(parts, name, mode, output_type):
    vae, base, refs, hints, text, _ = parts
    want = _diffusers(vae, base, refs[name], text, output_type, control_image=hints[0], controlnet_conditioning_scale=0.7,
                      control_guidance_end=0.6, control_mode=mode)
    got = _ours(vae, base, [FluxControl(ours_of(refs[name]), hints[0], 0.7, 0.0, 0.6, mode)], text, output_type)
    plain = _ours(vae, base, [], text, output_type)
    _agree(want, got, plain)


def test_several_controlnets_with_their_own_scales_and_windows_equal_diffusers(parts):
    vae, base, refs, hints, text, _ = parts
    multi = FluxMultiControlNetModel([refs["instantx"], refs["instantx-b"]])
    want = _diffusers(vae, base, multi, text, "latent", control_image=hints, controlnet_conditioning_scale=[0.5, 0.9],
                      control_guidance_start=[0.0, 0.3], control_guidance_end=[0.7, 1.0])
    units = [FluxControl(ours_of(refs["instantx"]), hints[0], 0.5, 0.0, 0.7),
             FluxControl(ours_of(refs["instantx-b"]), hints[1], 0.9, 0.3, 1.0)]
    _agree(want, _ours(vae, base, units, text, "latent"))


def test_one_union_net_with_two_modes_equals_diffusers(parts):
    vae, base, refs, hints, text, _ = parts
    multi = FluxMultiControlNetModel([refs["union"]])
    # diffusers needs the windows per hint here: with one net and one default window it zips the scales
    # against a single window and silently drops every hint after the first
    want = _diffusers(vae, base, multi, text, "latent", control_image=hints, control_mode=[0, 2],
                      controlnet_conditioning_scale=[0.6, 0.4], control_guidance_start=[0.0, 0.0],
                      control_guidance_end=[1.0, 1.0])
    net = ours_of(refs["union"])
    got = _ours(vae, base, [FluxControl(net, hints[0], 0.6, mode="canny"), FluxControl(net, hints[1], 0.4, mode="depth")],
                text, "latent")
    _agree(want, got, _ours(vae, base, [FluxControl(net, hints[0], 0.6, mode=0)], text, "latent"))


def test_true_cfg_equals_diffusers(parts):
    vae, base, refs, hints, text, negative = parts
    want = _diffusers(vae, base, refs["instantx"], text, "latent", control_image=hints[0], true_cfg_scale=2.5, **negative)
    got = _ours(vae, base, [FluxControl(ours_of(refs["instantx"]), hints[0])], text, "latent", true_cfg_scale=2.5, **negative)
    _agree(want, got, _ours(vae, base, [FluxControl(ours_of(refs["instantx"]), hints[0])], text, "latent"))


def test_a_flux_control_base_equals_flux_control_pipeline(parts):
    vae, _, _, hints, text, _ = parts
    base = randomized(FluxTransformer2DModel(**dict(FLUX_BASE, in_channels=32, out_channels=16)), 20)
    pipe = FluxControlPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                               text_encoder_2=None, tokenizer_2=None, transformer=base)
    pipe.set_progress_bar_config(disable=True)
    for output_type in ("latent", "pt"):
        want = pipe(**text, control_image=hints[0], height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=3.5,
                    output_type=output_type, generator=torch.Generator().manual_seed(0)).images
        _agree(want, _ours(vae, base, [], text, output_type, control_image=hints[0]))


def test_a_controlnet_outside_its_window_is_not_run(parts):
    vae, base, refs, hints, text, _ = parts
    net, calls = ours_of(refs["instantx"]), []
    net.register_forward_hook(lambda *_: calls.append(1))
    _ours(vae, base, [FluxControl(net, hints[0], end=0.4)], text, "latent")
    assert len(calls) == 1  # of 3 steps, only the first lies inside [0, 0.4]


def _units(refs, hints, **change):
    return [FluxControl(**{**dict(controlnet=ours_of(refs["instantx"]), image=hints[0]), **change})]


@pytest.mark.parametrize("change,message", [
    (dict(start=0.8, end=0.2), "start and end"),
    (dict(controlnet="union"), "union net: give a control mode"),
    (dict(controlnet="union", mode=10), "control mode 0..9"),
    (dict(controlnet="union", mode="sketch"), "or a name .canny, tile, depth"),
    (dict(controlnet="sd3"), "not a Flux ControlNet"),
    (dict(controlnet="wide"), "made for another base model"),
    (dict(controlnet="xlabs-4x"), "encodes hints 8× down, but this base's VAE scales by 4"),
])
def test_bad_controls_get_one_line_before_any_compute(parts, change, message):
    vae, base, refs, hints, text, _ = parts
    nets = {"union": lambda: ours_of(refs["union"]),
            "sd3": lambda: SD3ControlNet(num_layers=1, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                         caption_projection_dim=16, pooled_projection_dim=32, in_channels=4, patch_size=1),
            "wide": lambda: FluxControlNet(**dict(NETS["instantx"], num_attention_heads=4)),
            "xlabs-4x": lambda: ours_of(refs["xlabs"])}
    if change.get("controlnet") == "xlabs-4x":  # a VAE that scales by 4, not 8
        vae = AutoencoderKL(block_out_channels=(4, 4, 4), layers_per_block=1, latent_channels=4, norm_num_groups=1,
                            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    if "controlnet" in change:
        change["controlnet"] = nets[change["controlnet"]]()
    with pytest.raises(InputError, match=message):
        _ours(vae, base, _units(refs, hints, **change), text, "latent")


def test_sizes_and_control_images_that_do_not_fit_the_base_are_refused(parts):
    vae, base, refs, hints, text, _ = parts
    with pytest.raises(InputError, match="multiples of 16"):
        sample_flux(base, vae, FlowMatchEulerDiscreteScheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                    width=SIZE - 8, height=SIZE, steps=1)
    with pytest.raises(InputError, match="control_image is for FLUX.1 Control bases"):
        _ours(vae, base, [], text, "latent", control_image=hints[0])
    control_base = FluxTransformer2DModel(**dict(FLUX_BASE, in_channels=32, out_channels=16))
    with pytest.raises(InputError, match="needs control_image"):
        _ours(vae, control_base, [], text, "latent")


# ------------------------------------------------------------------------------------------ from text, from a folder

@pytest.fixture(scope="module")
def flux_folder(parts, tmp_path_factory):
    """A tiny Flux base written as diffusers writes it (FluxPipeline.save_pretrained): CLIP + T5."""
    from diffusers import FluxPipeline
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from controlnet.offline_tokenizer import offline_clip_tokenizer
    from controlnet.tiny import BYTE_VOCAB, clip_text_config, tiny_text_kwargs

    vae, base, _, _, _, _ = parts
    root = tmp_path_factory.mktemp("flux")
    words = ["<pad>", "</s>", "<unk>", "a", "red", "cube", "blue", "ball", "on", "grass"]
    t5_tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t5_tok.pre_tokenizer = Whitespace()
    tokenizer_2 = PreTrainedTokenizerFast(tokenizer_object=t5_tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(30)
    text_encoder = CLIPTextModel(clip_text_config(BYTE_VOCAB, **tiny_text_kwargs(32, layers=2))).eval()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(words), d_model=32, d_ff=37, d_kv=8, num_layers=2,
                                             num_heads=4, decoder_start_token_id=0)).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, transformer=base,
                        text_encoder=text_encoder, tokenizer=offline_clip_tokenizer(root / "clip_tok"),
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    pipe.save_pretrained(root / "base")
    return root / "base", pipe


def test_a_flux_folder_from_a_prompt_equals_diffusers(parts, flux_folder):
    from controlnet.pipeline.flux import FluxBase

    _, _, refs, hints, _, _ = parts
    folder, pipe = flux_folder
    ref = FluxControlNetPipeline(**pipe.components, controlnet=refs["union"])
    ref.set_progress_bar_config(disable=True)
    base = FluxBase.from_pretrained(folder)
    common = dict(height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=3.5, max_sequence_length=16,
                  output_type="pt")
    for negative in (None, "blue ball"):
        cfg = dict(negative_prompt=negative, true_cfg_scale=2.0) if negative else {}
        want = ref(prompt="a red cube on grass", control_image=hints[0], control_mode=2, controlnet_conditioning_scale=0.8,
                   generator=torch.Generator().manual_seed(0), **common, **cfg).images
        got = base("a red cube on grass", [FluxControl(ours_of(refs["union"]), hints[0], 0.8, mode=2)],
                   width=SIZE, height=SIZE, steps=3, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                   **cfg)
        _agree(want, got)


def test_a_flux_folder_is_refused_by_the_unet_pipeline_with_one_line(flux_folder):
    from controlnet.pipeline import ControlPipeline

    with pytest.raises(InputError, match="is a Flux base model"):
        ControlPipeline.from_pretrained(flux_folder[0])


def test_a_flux_folder_without_its_t5_names_what_is_missing(flux_folder, tmp_path):
    import shutil

    from controlnet.errors import MissingFileError
    from controlnet.pipeline.flux import FluxBase

    shutil.copytree(flux_folder[0], tmp_path / "base")
    shutil.rmtree(tmp_path / "base" / "text_encoder_2")
    with pytest.raises(MissingFileError, match="text_encoder_2"):
        FluxBase.from_pretrained(tmp_path / "base")


@pytest.mark.parametrize("steps,width", [(0, SIZE), (2.5, SIZE), (1, -16), (True, SIZE)])
def test_steps_and_sizes_must_be_positive_whole_numbers(parts, steps, width):
    vae, base, _, _, text, _ = parts
    with pytest.raises(InputError, match="must be a whole number"):
        sample_flux(base, vae, FlowMatchEulerDiscreteScheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                    width=width, height=SIZE, steps=steps)
