"""img2img on SD3 and Flux bases equals diffusers on tiny random models (latents ≤ 1e-4): `sample_flux`
with an init image and a ControlNet against `FluxControlNetImg2ImgPipeline`, `sample_sd3` with an init
image against `StableDiffusion3Img2ImgPipeline` (diffusers has no SD3 ControlNet img2img pipeline; the
ControlNet part of `sample_sd3` is proven in test_sd3_pipeline.py). The models are those files' fixtures."""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetImg2ImgPipeline,
    StableDiffusion3Img2ImgPipeline,
)

from controlnet.errors import InputError
from controlnet.pipeline.flux import FluxControl, sample_flux
from controlnet.pipeline.sd3 import sample_sd3
from test_flux_pipeline import ours_of
from test_flux_pipeline import parts as flux_parts  # noqa: F401  (the fixture)
from test_sd3_pipeline import _scheduler
from test_sd3_pipeline import parts as sd3_parts  # noqa: F401

TOL = 1e-4


def _agree(a, b, plain):
    assert a.shape == b.shape and float((a - b).abs().max()) <= TOL
    assert float((a - plain).abs().max()) > 100 * TOL  # the init image acts


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_flux_img2img_with_a_controlnet_equals_diffusers(flux_parts, strength):  # noqa: F811
    vae, base, refs, hints, text, _ = flux_parts
    pipe = FluxControlNetImg2ImgPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                                         tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=base,
                                         controlnet=refs["instantx"])
    pipe.set_progress_bar_config(disable=True)
    common = dict(width=64, height=64, output_type="latent")
    want = pipe(**text, image=hints[1], control_image=hints[0], strength=strength, num_inference_steps=5,
                controlnet_conditioning_scale=0.7, guidance_scale=3.5, generator=torch.Generator().manual_seed(0),
                **common).images
    control = FluxControl(ours_of(refs["instantx"]), hints[0], 0.7)
    ours = dict(steps=5, guidance_scale=3.5, generator=torch.Generator().manual_seed(0), **common)
    got = sample_flux(base, vae, FlowMatchEulerDiscreteScheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                      [control], init_image=hints[1], strength=strength, **ours)
    ours["generator"] = torch.Generator().manual_seed(0)
    plain = sample_flux(base, vae, FlowMatchEulerDiscreteScheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"],
                        [control], **ours)
    if strength == 1.0:  # all steps from noise: the init image only shifts the random draws
        assert want.shape == got.shape and float((want - got).abs().max()) <= TOL
    else:
        _agree(want, got, plain)


def test_sd3_img2img_equals_diffusers(sd3_parts):  # noqa: F811
    vae, bases, _, hints, text = sd3_parts
    pipe = StableDiffusion3Img2ImgPipeline(transformer=bases["sd3"], scheduler=_scheduler(), vae=vae, text_encoder=None,
                                           tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                           tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    common = dict(width=8, height=8, guidance_scale=5.0, output_type="latent")
    want = pipe(**text, image=hints[1], strength=0.6, num_inference_steps=5, generator=torch.Generator().manual_seed(0),
                **common).images

    def ours(**kw):
        return sample_sd3(bases["sd3"], vae, _scheduler(), text["prompt_embeds"], text["pooled_prompt_embeds"], [],
                          negative_prompt_embeds=text["negative_prompt_embeds"],
                          negative_pooled_prompt_embeds=text["negative_pooled_prompt_embeds"], steps=5,
                          generator=torch.Generator().manual_seed(0), **common, **kw)

    _agree(want, ours(init_image=hints[1], strength=0.6), ours())
    with pytest.raises(InputError, match="strength must be in"):
        ours(init_image=hints[1], strength=0.0)
