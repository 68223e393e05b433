"""Prompt -> text conditioning, exactly as diffusers' SD / SDXL pipelines compute it.

SD 1.x/2.x: the CLIP text encoder's last hidden state. SDXL: the penultimate hidden states of both
encoders concatenated along features, plus the second encoder's projected pooled output.
"""

from __future__ import annotations

import torch


def _ids(tokenizer, prompts: list[str], max_length: int) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def encode_sd(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """(B, 77, D) hidden states of SD 1.x/2.x."""
    ids = _ids(tokenizer, prompts, tokenizer.model_max_length).to(text_encoder.device)
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = (ids != tokenizer.pad_token_id).long()
    return text_encoder(ids, attention_mask=mask)[0]


@torch.no_grad()
def encode_sdxl(encoders, tokenizers, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 77, D1+D2) penultimate hidden states of both encoders, and (B, P) pooled text embeds."""
    hidden, pooled = [], None
    for encoder, tokenizer in zip(encoders, tokenizers):
        ids = _ids(tokenizer, prompts, tokenizer.model_max_length).to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        if pooled is None and out[0].ndim == 2:  # CLIPTextModelWithProjection's text_embeds
            pooled = out[0]
        hidden.append(out.hidden_states[-2])
    if pooled is None:
        raise ValueError("an SDXL base needs a CLIPTextModelWithProjection as text_encoder_2 (for the pooled embedding)")
    return torch.cat(hidden, dim=-1), pooled
