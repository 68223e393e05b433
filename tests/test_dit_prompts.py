"""Long prompts on transformer bases (issue 21 §2): SD3's and Flux's rules are diffusers' — each CLIP
reads 77 tokens, T5 `max_sequence_length`, the rest is dropped (no 77-token chunks, no weighting, unlike
the U-Net pipeline) — so the embeddings equal diffusers' `encode_prompt` for a prompt longer than
both, and the cut is reported with the words dropped (`PromptTruncated`)."""

from __future__ import annotations

import warnings

import pytest
import torch

from controlnet.pipeline.flux import FluxBase, encode_flux_prompt
from controlnet.pipeline.sd3 import SD3Base, encode_sd3_prompt
from controlnet.pipeline.text import PromptTruncated
from dit_bases import save_flux_base, save_sd3_base

LONG = " ".join(["a red cube on grass"] * 20)  # 100 words: past CLIP's 77 tokens and T5's 16 below
SHORT = "a red cube"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts")
    return save_sd3_base(root / "sd3"), save_flux_base(root / "flux")


def _encode(fn, prompt):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn(prompt)
    return out, [str(w.message) for w in seen if issubclass(w.category, PromptTruncated)]


def test_sd3_long_prompts_equal_diffusers_and_the_cut_is_reported(folders):
    from diffusers import StableDiffusion3Pipeline

    ref = StableDiffusion3Pipeline.from_pretrained(folders[0], local_files_only=True)
    base = SD3Base.from_pretrained(folders[0])
    tokenizers = (base.tokenizer, base.tokenizer_2, base.tokenizer_3)
    encoders = (base.text_encoder, base.text_encoder_2, base.text_encoder_3)
    for prompt, cut in ((LONG, True), (SHORT, False)):
        with torch.no_grad():
            want = ref.encode_prompt(prompt, None, None, do_classifier_free_guidance=False, max_sequence_length=16)
        (embeds, pooled), notes = _encode(lambda p: encode_sd3_prompt(tokenizers, encoders, [p], 16, 32), prompt)
        assert float((embeds - want[0]).abs().max()) <= 1e-5 and float((pooled - want[2]).abs().max()) <= 1e-5
        if cut:  # both CLIPs and T5 say what they dropped: the prompt's tail
            assert sum("CLIP reads 77 tokens" in n for n in notes) == 2 and any("T5" in n and "16" in n for n in notes)
            assert all("grass" in n for n in notes)
        else:
            assert notes == []


def test_flux_long_prompts_equal_diffusers_and_the_cut_is_reported(folders):
    from diffusers import FluxPipeline

    ref = FluxPipeline.from_pretrained(folders[1], local_files_only=True)
    base = FluxBase.from_pretrained(folders[1])
    with torch.no_grad():
        want = ref.encode_prompt(LONG, None, max_sequence_length=16)
    (embeds, pooled), notes = _encode(lambda p: encode_flux_prompt(base.tokenizer, base.text_encoder, base.tokenizer_2,
                                                                   base.text_encoder_2, [p], 16), LONG)
    assert float((embeds - want[0]).abs().max()) <= 1e-5 and float((pooled - want[1]).abs().max()) <= 1e-5
    assert any("CLIP" in n for n in notes) and any("T5" in n for n in notes)
