"""Prompt -> text conditioning, exactly as diffusers' SD / SDXL pipelines compute it.

SD 1.x/2.x: the CLIP text encoder's last hidden state. SDXL: the penultimate hidden states of both
encoders concatenated along features, plus the second encoder's projected pooled output.

Prompts with weights (`(word:1.3)`, `word++`, `(word)1.3`) or longer than the tokenizer's window
go through `compel` (weighting by lerping from the empty prompt, long prompts in 77-token chunks,
the shorter of prompt/negative padded with empty chunks); plain prompts that fit are encoded as
before, bit for bit. `controlnet.pipeline.prompts` reads the syntax.
"""

from __future__ import annotations

import warnings

import torch

from controlnet.pipeline.prompts import parse_prompt


def _ids(tokenizer, prompts: list[str], max_length: int) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids


class PromptTruncated(UserWarning):
    """A prompt longer than a transformer base's text encoder reads: its end is dropped."""


def truncating_ids(tokenizer, prompts: list[str], max_length: int, encoder: str) -> torch.Tensor:
    """Token ids as diffusers' SD3 / Flux pipelines make them: padded and cut to `max_length`, no
    chunking and no weighting (prompt syntax is read as plain text). A prompt cut short is reported
    with the words dropped (a `PromptTruncated` warning; diffusers logs the same words)."""
    for prompt in dict.fromkeys(prompts):
        full = tokenizer(prompt).input_ids
        if len(full) > max_length:
            dropped = tokenizer.decode(full[max_length - 1:-1], skip_special_tokens=True)
            warnings.warn(f"{encoder} reads {max_length} tokens and the prompt has {len(full)}: dropped {dropped!r}",
                          PromptTruncated, stacklevel=3)
    return _ids(tokenizer, prompts, max_length)


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


def _pad_to(states: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    """(B, L, D) -> (B, length, D) by appending (1, 77, D) empty chunks; length - L is a multiple of 77."""
    while states.shape[1] < length:
        states = torch.cat([states, torch.cat([empty.to(states.dtype)] * states.shape[0])], dim=1)
    return states


class PromptEncoder:
    """Prompts -> (B, n*77, D) states (and SDXL's pooled embeds) for one base's encoder(s).

    One encoder: SD 1.x/2.x; two: SDXL. Lengths differ only for long prompts; `encode` pads a batch
    to its longest prompt with compel's empty chunks, as compel pads a prompt/negative pair."""

    def __init__(self, encoders: list, tokenizers: list):
        self.encoders, self.tokenizers, self.xl = list(encoders), list(tokenizers), len(encoders) == 2
        if self.xl and not hasattr(self.encoders[1], "text_projection"):
            raise ValueError("an SDXL base needs a CLIPTextModelWithProjection as text_encoder_2 (for the pooled embedding)")
        self._compels = None

    @property
    def compels(self) -> list:
        """One compel per encoder, as compel's CompelForSD / CompelForSDXL set them up (made when first needed)."""
        if self._compels is None:
            from compel import Compel, ReturnedEmbeddingsType

            kind = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if self.xl
                    else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
            self._compels = [Compel(tokenizer=t, text_encoder=e, truncate_long_prompts=False, returned_embeddings_type=kind)
                             for e, t in zip(self.encoders, self.tokenizers)]
        return self._compels

    def _fits(self, prompt: str) -> bool:
        return all(len(t(prompt, verbose=False).input_ids) <= t.model_max_length for t in self.tokenizers)

    def _today(self, prompts: list[str]):
        if self.xl:
            return encode_sdxl(self.encoders, self.tokenizers, prompts)
        return encode_sd(self.encoders[0], self.tokenizers[0], prompts), None

    def _weighted(self, prompt: str, conjunction):
        """compel's own conditioning (per encoder, padded to one length) and, for SDXL, its pooled embeds."""
        parts = [c.build_conditioning_tensor_for_conjunction(conjunction)[0] for c in self.compels]
        parts = self._pad(parts, per_encoder=True)
        pooled = self.compels[1].conditioning_provider.get_pooled_embeddings([prompt]) if self.xl else None
        return torch.cat(parts, dim=-1), pooled

    def _pad(self, states: list[torch.Tensor], per_encoder: bool = False) -> list[torch.Tensor]:
        """Pad to the longest with empty-prompt chunks, as compel's `pad_conditioning_tensors_to_same_length`."""
        length = max(s.shape[1] for s in states)
        if all(s.shape[1] == length for s in states):
            return states
        empties = [c.conditioning_provider.empty_z for c in self.compels]
        if per_encoder:
            return [_pad_to(s, length, e) for s, e in zip(states, empties)]
        return [_pad_to(s, length, torch.cat(empties, dim=-1)) for s in states]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L, D) states and (B, P) pooled (SDXL) or None; a batch of plain prompts that fit is today's."""
        parsed = [parse_prompt(p) for p in prompts]
        if all(c is None and self._fits(p) for p, c in zip(prompts, parsed)):
            return self._today(prompts)
        rows = [self._today([p]) if c is None and self._fits(p) else self._weighted(p, c or parse_prompt(p, force=True))
                for p, c in zip(prompts, parsed)]
        states = self._pad([s for s, _ in rows])
        pooled = torch.cat([q for _, q in rows]) if self.xl else None
        return torch.cat(states), pooled

    def pad_pair(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A prompt batch and its negatives at one length (a long prompt against a short negative)."""
        a, b = self._pad([a, b])
        return a, b


def encode_prompts(encoders: list, tokenizers: list, prompts: list[str], negatives: list[str], guided: bool,
                   zero_empty_negative: bool = False):
    """(states, SDXL added_cond_kwargs or None) for the batch `[uncond; cond]` (cond only when not guided).
    `zero_empty_negative`: diffusers' SDXL default, no negative prompt -> zero embeddings, not those of ""."""
    enc = PromptEncoder(encoders, tokenizers)
    cond, pooled = enc.encode(prompts)
    if guided:
        if zero_empty_negative and all(n == "" for n in negatives):
            neg, neg_pooled = torch.zeros_like(cond), (torch.zeros_like(pooled) if pooled is not None else None)
        else:
            neg, neg_pooled = enc.encode(negatives)
            neg, cond = enc.pad_pair(neg, cond)
        cond = torch.cat([neg, cond])
        pooled = torch.cat([neg_pooled, pooled]) if pooled is not None else None
    return cond, ({"text_embeds": pooled} if pooled is not None else None)
