"""`ControlPipeline.decode`: in the VAE's dtype (an fp16 VAE decodes in fp16, although its config
carries diffusers' default `force_upcast=True`), redone in fp32 when fp16 overflows, and then fp32
straight away for that pipeline."""

import torch

from controlnet.pipeline import ControlPipeline
from tiny_models import tiny_pipeline


def _spy_decode(vae) -> list:
    """Record the dtype each VAE decode runs in."""
    seen, decode = [], vae.decode

    def spy(z, *a, **k):
        seen.append((z.dtype, vae.dtype))
        return decode(z, *a, **k)

    vae.decode = spy
    return seen


def _latents(scale: float = 1.0) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * scale


def test_fp16_vae_decodes_in_fp16_within_fp16_noise_of_fp32():
    pipe = tiny_pipeline("sd1")
    assert pipe.vae.config.force_upcast  # the default most VAE configs carry: no reason to upcast by itself
    ours = ControlPipeline.from_diffusers(pipe)
    with torch.no_grad():
        reference = ours.decode(_latents())
    pipe.vae.to(torch.float16)
    seen = _spy_decode(pipe.vae)
    with torch.no_grad():
        got = ours.decode(_latents())
    assert seen == [(torch.float16, torch.float16)]
    assert got.dtype == torch.float32 and pipe.vae.dtype == torch.float16
    torch.testing.assert_close(got, reference, atol=1e-2, rtol=0)  # pixels in [0, 1]; fp16 keeps ~3 digits


def test_fp16_overflow_is_decoded_again_in_fp32_and_later_decodes_start_in_fp32():
    pipe = tiny_pipeline("sd1")
    pipe.vae.to(torch.float16).to(torch.float32)  # the fp16 weights, so the fp32 reference uses the same ones
    ours = ControlPipeline.from_diffusers(pipe)
    big = _latents(2e4)  # / scaling_factor 0.18215: beyond fp16's 65504, fine in fp32 (the VAE's GroupNorms rescale)
    with torch.no_grad():
        reference = ours.decode(big)
    assert torch.isfinite(reference).all()
    pipe.vae.to(torch.float16)
    seen = _spy_decode(pipe.vae)
    with torch.no_grad():
        got = ours.decode(big)
        again = ours.decode(_latents())
    assert seen == [(torch.float16, torch.float16), (torch.float32, torch.float32), (torch.float32, torch.float32)]
    assert pipe.vae.dtype == torch.float16  # put back after each fp32 decode
    torch.testing.assert_close(got, reference)
    assert torch.isfinite(again).all()
