"""The controlled transformer: the paper's equation for diffusion-transformer bases (SD3/SD3.5, Flux), once.

A DiT ControlNet is a truncated copy of the base (M blocks for the base's N), a zero-initialised
input projection of the control latent, and one zero linear per copied block. Its M outputs are
added to the image tokens after base blocks; *which* output follows *which* block is a per-family
index rule, named here and nowhere else:

    h_i <- B_i(h_{i-1}) + Σ_c s_c · Z_c[rule_c(i, N, M_c)]

The bases are diffusers' `SD3Transformer2DModel` / `FluxTransformer2DModel`; their blocks run here
step for step as diffusers runs them, so several ControlNets with *different* rules or block counts
(an XLabs and an InstantX net together) add up, which diffusers' transformers cannot do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch


def sd3_rule(i: int, n: int, m: int) -> int:
    """SD3/SD3.5 (`transformer_sd3.py`): a float interval, `int(i / (N/M))`."""
    return int(i / (n / m))


def flux_rule(i: int, n: int, m: int) -> int:
    """Flux and Qwen (`transformer_flux.py`): `i // ceil(N/M)`; the last samples may never be used."""
    return i // math.ceil(n / m)


def xlabs_rule(i: int, n: int, m: int) -> int:
    """XLabs (x-flux `model.py`): cyclic, `i % M`."""
    return i % m


INDEX_RULES: dict[str, Callable[[int, int, int], int]] = {"sd3": sd3_rule, "flux": flux_rule, "xlabs": xlabs_rule}


def used_samples(rule: str, n: int, m: int) -> list[int]:
    """Which of a ControlNet's M samples the N base blocks ever receive under `rule`."""
    return sorted({INDEX_RULES[rule](i, n, m) for i in range(n)})


class DiTResiduals(NamedTuple):
    """What a DiT ControlNet hands its base: samples for the double-stream (joint) blocks, for the
    single-stream blocks (Flux only), already multiplied by the conditioning scale, and the rule
    that maps them onto base blocks."""

    double: tuple[torch.Tensor, ...]
    single: tuple[torch.Tensor, ...] = ()
    rule: str = "flux"

    def scaled(self, scale: float | torch.Tensor) -> DiTResiduals:
        return DiTResiduals(tuple(s * scale for s in self.double), tuple(s * scale for s in self.single), self.rule)


def inject(hidden: torch.Tensor, i: int, n: int, controls: Sequence[DiTResiduals], single: bool = False) -> torch.Tensor:
    """y_c = F(x; Θ) + Z(...): base block i's image tokens plus every ControlNet's sample for it."""
    for c in controls:
        samples = c.single if single else c.double
        if samples:
            hidden = hidden + samples[INDEX_RULES[c.rule](i, n, len(samples))].to(hidden.dtype)
    return hidden


def _check(controls: Sequence[DiTResiduals], hidden: torch.Tensor, base: str) -> None:
    for k, c in enumerate(controls):
        if c.rule not in INDEX_RULES:
            raise ValueError(f"ControlNet {k}: unknown index rule {c.rule!r}; one of {', '.join(INDEX_RULES)}")
        for s in (*c.double, *c.single):
            if s.shape[-1] != hidden.shape[-1] or s.shape[-2] != hidden.shape[-2]:
                raise ValueError(f"ControlNet {k} gives samples of shape {tuple(s.shape)}, the {base} base has image "
                                 f"tokens of shape {tuple(hidden.shape)}: the ControlNet was made for another base "
                                 "model or image size")


def concat_control(transformer, tokens: torch.Tensor, control_tokens: torch.Tensor | None) -> torch.Tensor:
    """FLUX.1 Control's input: [x; c] on the channel axis (`FluxControlPipeline`); checks that the
    base is such a model exactly when a control latent is given."""
    width = transformer.x_embedder.in_features
    given = tokens.shape[-1] + (control_tokens.shape[-1] if control_tokens is not None else 0)
    if given != width:
        kind = "a FLUX.1 Control model (it needs the control latent)" if width == 2 * tokens.shape[-1] else \
            "a Flux base without a concatenated control input"
        raise ValueError(f"the base's input layer takes {width} channels but got {given}: it is {kind}")
    return tokens if control_tokens is None else torch.cat([tokens, control_tokens.to(tokens.dtype)], dim=2)


def controlled_sd3(
    transformer,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
    controls: Sequence[DiTResiduals] = (),
    joint_attention_kwargs: dict | None = None,
) -> torch.Tensor:
    """The velocity of diffusers' `SD3Transformer2DModel` with ControlNets: its forward, block for block,
    with `inject` after every block that is not `context_pre_only` (the last SD3 block never gets one)."""
    t = transformer
    height, width = hidden_states.shape[-2:]
    h = t.pos_embed(hidden_states).contiguous()
    _check(controls, h, "SD3")
    temb = t.time_text_embed(timestep, pooled_projections)
    ctx = t.context_embedder(encoder_hidden_states)
    n = len(t.transformer_blocks)
    for i, block in enumerate(t.transformer_blocks):
        ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb, joint_attention_kwargs=joint_attention_kwargs)
        if block.context_pre_only is False:
            h = inject(h, i, n, controls)
    h = t.proj_out(t.norm_out(h, temb))
    p, c = t.config.patch_size, t.out_channels
    h = h.reshape(h.shape[0], height // p, width // p, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", h).reshape(h.shape[0], c, height, width)


def controlled_flux(
    transformer,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    guidance: torch.Tensor | None = None,
    controls: Sequence[DiTResiduals] = (),
    joint_attention_kwargs: dict | None = None,
    control_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """The prediction of diffusers' `FluxTransformer2DModel` (packed tokens in and out) with ControlNets;
    `timestep` and `guidance` as the Flux pipelines pass them (t/1000; multiplied by 1000 here).
    `control_tokens`: the packed control latent of a FLUX.1 Control model (Canny/Depth dev), which
    takes it concatenated on the input channels instead of through a ControlNet."""
    t = transformer
    hidden_states = concat_control(t, hidden_states, control_tokens)
    h = t.x_embedder(hidden_states)
    _check(controls, h, "Flux")
    timestep = timestep.to(h.dtype) * 1000
    temb = (t.time_text_embed(timestep, pooled_projections) if guidance is None
            else t.time_text_embed(timestep, guidance.to(h.dtype) * 1000, pooled_projections))
    ctx = t.context_embedder(encoder_hidden_states)
    rotary = t.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    n = len(t.transformer_blocks)
    for i, block in enumerate(t.transformer_blocks):
        ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary,
                       joint_attention_kwargs=joint_attention_kwargs)
        h = inject(h, i, n, controls)
    n = len(t.single_transformer_blocks)
    for i, block in enumerate(t.single_transformer_blocks):
        ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary,
                       joint_attention_kwargs=joint_attention_kwargs)
        h = inject(h, i, n, controls, single=True)
    return t.proj_out(t.norm_out(h, temb))
