"""Union ControlNets (xinsir controlnet-union-sdxl-1.0 and ProMax): one network, many condition kinds.

The SDXL ControlNet (`ControlNet`) plus, with diffusers' `ControlNetUnionModel` module names so the
state dicts are equal:
- a wider hint encoder (`conditioning_embedding_out_channels` 48/96/192/384 by default);
- `task_embedding` (num_control_type × C): one learned vector per control type (6; 8 for ProMax);
- `transformer_layes` (sic): one small transformer layer over the condition tokens
  (token k = mean over H, W of E(c_k) + task_embedding[type_k]; one last token for conv_in(x));
- `spatial_ch_projs`: a zero linear from each condition token to a per-channel offset;
- `control_add_embedding`: the 0/1 flags of the types in use, embedded like timesteps and added to
  the time embedding.

x + Σ_k (E(c_k) + proj(token_k)) then enters the trainable copy as in any ControlNet. With several
conditions in one pass, condition k's features, token and offset are multiplied by its scale
(diffusers ≥ 0.35, #11888) and the residuals are not; with one condition the scale is the unit's
weight, applied to the residuals like any ControlNet's. Residuals come out unscaled either way.

The quirk (docs/families.md): the reference runs `nn.MultiheadAttention` (sequence-first) on a
(batch, tokens, C) tensor, so it attends across the *batch rows* at each token position and never
across a row's own tokens. Default `attend_across="batch"` reproduces that exactly. It only matters
when one batch mixes different hints (a list of per-image condition images); with one hint for the
whole batch (the usual case, CFG included) every row holds the same tokens and the two readings
agree. `attend_across="tokens"` attends across each sample's condition tokens instead, as the
architecture intends (and as ComfyUI/A1111 behave for one condition per unit).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from controlnet.errors import InputError
from controlnet.nn.controlnet import ControlNet, _tile_batch
from controlnet.nn.residuals import ControlResiduals

# Index -> the names users know it by (xinsir's README, ComfyUI's SetUnionControlNetType, A1111).
CONTROL_TYPES = (
    ("openpose", "pose", "dw_openpose"),
    ("depth",),
    ("hed", "pidi", "scribble", "ted", "softedge", "soft_edge", "hed/pidi/scribble/ted"),
    ("canny", "lineart", "anime_lineart", "mlsd", "hard_edge", "canny/lineart/anime_lineart/mlsd", "canny/lineart/mlsd",
     "edges"),  # edges: the built-in world's outlines
    ("normal", "normal_map"),
    ("segment", "seg", "segmentation"),
    ("tile",),
    ("repaint", "inpaint"),
)
TYPE_INDEX = {name: i for i, names in enumerate(CONTROL_TYPES) for name in names}
UNION_WIDTHS = (48, 96, 192, 384)
HEADS = 8  # xinsir's num_trans_head
ATTENTION_MODES = ("batch", "tokens")


def control_type_names(num_control_type: int) -> list[str]:
    """The main name of each of a union's control types, in index order."""
    return [CONTROL_TYPES[i][0] if i < len(CONTROL_TYPES) else f"type{i}" for i in range(num_control_type)]


def control_type_index(value, num_control_type: int, label: str = "control type") -> int:
    """A type name (any of the aliases, any case; spaces and dashes as underscores) or index -> index."""
    names = ", ".join(control_type_names(num_control_type))
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"{label} must be a name or an index, got {value!r:.40}; valid: {names}")
    if isinstance(value, str):
        key = value.strip().lower().replace(" ", "_").replace("-", "_")
        if key.isdigit():
            index = int(key)
        elif key in TYPE_INDEX:
            index = TYPE_INDEX[key]
        else:
            raise InputError(f"{label} {value!r} is unknown; valid: {names}")
    else:
        index = value
    if not 0 <= index < num_control_type:
        more = " (tile and repaint need the ProMax model, which has 8)" if index in (6, 7) else ""
        raise InputError(f"{label} {value!r} is not one of this union ControlNet's {num_control_type} types{more}; "
                         f"valid: {names}")
    return index


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionMlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-norm transformer layer. `across="batch"` feeds (B, L, C) to the sequence-first
    attention as the reference does (rows attend to rows); "tokens" attends within each row."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = ResidualAttentionMlp(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, across: str = "batch") -> torch.Tensor:
        y = self.ln_1(x)
        y = y if across == "batch" else y.transpose(0, 1)
        y = self.attn(y, y, y, need_weights=False)[0]
        x = x + (y if across == "batch" else y.transpose(0, 1))
        return x + self.mlp(self.ln_2(x))


@dataclass(frozen=True)
class UnionConditions:
    """What a union forward needs besides the latents: E(c_k) per condition, its type index and scale.
    Compute once per image with `UnionControlNet.embed_conditions` and pass as `hint_embedding=`."""

    embeddings: tuple[torch.Tensor, ...]
    types: tuple[int, ...]
    scales: tuple[float, ...]


class UnionControlNet(ControlNet):
    """`ControlNet` + task embeddings, the condition transformer and the control-type embedding.

    Call it as `cn(sample, t, text, hint=[h1, h2], control_types=["canny", "depth"], scales=[1, .5])`
    or with `hint_embedding=cn.embed_conditions(...)`; returns unscaled `ControlResiduals`.
    """

    diffusers_class_name = "ControlNetUnionModel"

    @register_to_config
    def __init__(
        self,
        num_control_type: int = 6,
        num_trans_channel: int = 320,
        num_trans_head: int = 8,
        num_trans_layer: int = 1,
        num_proj_channel: int = 320,
        attend_across: str = "batch",
        **kwargs,
    ):
        kwargs.setdefault("conditioning_embedding_out_channels", UNION_WIDTHS)
        super().__init__(**kwargs)
        c = self.config
        if attend_across not in ATTENTION_MODES:
            raise ValueError(f"attend_across must be 'batch' (the reference) or 'tokens', got {attend_across!r}")
        if num_proj_channel != c.block_out_channels[0] or num_control_type < 1:
            raise ValueError(f"num_proj_channel ({num_proj_channel}) must equal block_out_channels[0] "
                             f"({c.block_out_channels[0]}) and num_control_type ({num_control_type}) be positive")
        if c.addition_time_embed_dim is None:
            raise ValueError("a union ControlNet needs addition_time_embed_dim (its control-type embedding uses it)")
        self.task_embedding = nn.Parameter(num_trans_channel**0.5 * torch.randn(num_control_type, num_trans_channel))
        self.transformer_layes = nn.ModuleList(ResidualAttentionBlock(num_trans_channel, num_trans_head)
                                               for _ in range(num_trans_layer))
        self.spatial_ch_projs = nn.Linear(num_trans_channel, num_proj_channel)
        nn.init.zeros_(self.spatial_ch_projs.weight)
        nn.init.zeros_(self.spatial_ch_projs.bias)
        self.control_type_proj = Timesteps(c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift)
        self.control_add_embedding = TimestepEmbedding(c.addition_time_embed_dim * num_control_type, c.block_out_channels[0] * 4)

    @classmethod
    def from_unet(cls, unet, *, num_control_type: int = 6, **kwargs) -> UnionControlNet:
        """A union ControlNet copied from a U-Net (to train): `ControlNet.from_unet` plus the union's
        modules at block_out_channels[0] wide (8 heads when it divides), xinsir's 6 type slots (8: ProMax's).
        A U-Net without SDXL's time ids gets a control-type embedding of that width too."""
        width = unet.config.block_out_channels[0]
        extra = dict(num_control_type=num_control_type, num_trans_channel=width, num_proj_channel=width,
                     num_trans_head=HEADS if width % HEADS == 0 else 1,
                     addition_time_embed_dim=unet.config.get("addition_time_embed_dim") or width)
        return super().from_unet(unet, **kwargs, **extra)

    @staticmethod
    def _get_init_keys(input_class):
        """ConfigMixin's init keys (from_config, from_pretrained): ours and the base ControlNet's."""
        return set(inspect.signature(input_class.__init__).parameters) | set(inspect.signature(ControlNet.__init__).parameters)

    @property
    def control_types(self) -> list[str]:
        return control_type_names(self.config.num_control_type)

    # ------------------------------------------------------------------ conditions

    def embed_conditions(self, hints: Sequence[torch.Tensor] | torch.Tensor, types, scales=None) -> UnionConditions:
        """E(c_k) of each hint (B, 3, H, W in [0, 1]), with its type (name or index) and scale (default 1)."""
        hints = [hints] if torch.is_tensor(hints) else list(hints)
        types = [types] if isinstance(types, (str, int)) else list(types)
        scales = [1.0] * len(hints) if scales is None else [float(s) for s in scales]
        if not hints or len(types) != len(hints) or len(scales) != len(hints):
            raise InputError(f"a union ControlNet takes one control type and one scale per hint; got {len(hints)} hints, "
                             f"{len(types)} types and {len(scales)} scales")
        indices = tuple(control_type_index(t, self.config.num_control_type) for t in types)
        return UnionConditions(tuple(self.embed_hint(h) for h in hints), indices, tuple(scales))

    def control_embed(self, types: Sequence[int], batch: int, dtype) -> torch.Tensor:
        """The control-type embedding added to the time embedding: 0/1 flags of the types in use."""
        flags = torch.zeros(self.config.num_control_type, device=self.device)
        flags[list(types)] = 1.0
        proj = self.control_type_proj(flags.repeat(batch)).reshape(batch, -1)
        return self.control_add_embedding(proj.to(dtype))

    def fuse(self, x: torch.Tensor, conditions: UnionConditions) -> torch.Tensor:
        """x + Σ_k (E(c_k) + proj(token_k)) · s_k, the tokens mixed by the condition transformer."""
        several = len(conditions.types) > 1
        features, tokens = [], []
        for embedding, index, scale in zip(conditions.embeddings, conditions.types, conditions.scales, strict=True):
            e = _tile_batch(embedding, x.shape[0], "hint").to(x.dtype)
            token = (e.mean(dim=(2, 3)) + self.task_embedding[index]).unsqueeze(1)
            tokens.append(token * scale if several else token)
            features.append(e * scale if several else e)
        tokens.append(x.mean(dim=(2, 3)).unsqueeze(1))
        t = torch.cat(tokens, dim=1)
        for layer in self.transformer_layes:
            t = layer(t, self.config.attend_across)
        fused = x * 0.0
        for k, (e, scale) in enumerate(zip(features, conditions.scales)):
            alpha = self.spatial_ch_projs(t[:, k])[..., None, None]
            fused += e + (alpha * scale if several else alpha)
        return x + fused

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        hint=None,
        *,
        hint_embedding: UnionConditions | None = None,
        control_types=None,
        scales=None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs=None,
    ) -> ControlResiduals:
        """Residuals for a batch: `hint` (one tensor or a list) with `control_types` (and `scales`),
        or `hint_embedding` from `embed_conditions`. Unscaled, except condition features when
        several conditions share the pass (see the module docstring)."""
        if torch.is_tensor(control_types) and hint_embedding is None:
            return self._forward_rows(sample, timestep, encoder_hidden_states, hint, control_types,
                                      added_cond_kwargs, class_labels, timestep_cond, attention_mask, cross_attention_kwargs)
        conditions = hint_embedding
        if conditions is None:
            if hint is None or control_types is None:
                raise InputError("a union ControlNet needs hints and their control types (e.g. control_types=['canny'])")
            conditions = self.embed_conditions(hint, control_types, scales)
        elif not isinstance(conditions, UnionConditions):
            raise InputError("a union ControlNet's hint_embedding comes from embed_conditions(hints, types, scales)")
        for e in conditions.embeddings:
            if e.shape[-2:] != sample.shape[-2:]:
                raise InputError(f"hint of {tuple(e.shape[-2:])} latent pixels does not match the sample's "
                                 f"{tuple(sample.shape[-2:])}: the hint must be {self.hint_downscale}x the latent size")
        emb = self.time_embed(sample, timestep, encoder_hidden_states, added_cond_kwargs, class_labels, timestep_cond)
        emb = emb + self.control_embed(conditions.types, sample.shape[0], emb.dtype)
        h = self.fuse(self.conv_in(sample), conditions)
        return self.control(h, emb, encoder_hidden_states, attention_mask, cross_attention_kwargs)

    def _forward_rows(self, sample, timestep, encoder_hidden_states, hint, types: torch.Tensor, *rest) -> ControlResiduals:
        """One hint per row, row b of type `types[b]` (training on batches that mix types). Each row
        equals a forward of that row alone with its one hint: the condition transformer sees no other
        row (with the reference's batch-wise attention, a batch of one is what one hint per batch gives)."""
        added_cond_kwargs, class_labels, timestep_cond, attention_mask, cross_attention_kwargs = rest
        n = self.config.num_control_type
        types = types.to(self.task_embedding.device, torch.long)
        if types.shape != (sample.shape[0],) or not torch.is_tensor(hint) or hint.shape[0] != sample.shape[0]:
            raise InputError(f"control types per row need one hint and one type per sample: {tuple(types.shape)} types, "
                             f"{sample.shape[0]} samples")
        if types.numel() and not 0 <= int(types.min()) <= int(types.max()) < n:
            raise InputError(f"control type index out of range 0..{n - 1}: {types.tolist()}")
        e = self.embed_hint(hint)
        emb = self.time_embed(sample, timestep, encoder_hidden_states, added_cond_kwargs, class_labels, timestep_cond)
        flags = torch.nn.functional.one_hot(types, n).to(emb.dtype)
        proj = self.control_type_proj(flags.flatten()).reshape(sample.shape[0], -1)
        emb = emb + self.control_add_embedding(proj.to(emb.dtype))
        x = self.conv_in(sample)
        e = e.to(x.dtype)
        t = torch.stack([e.mean(dim=(2, 3)) + self.task_embedding[types], x.mean(dim=(2, 3))], dim=1)
        for layer in self.transformer_layes:  # rows alone: (1, B*L, C) is a sequence of one per token
            t = layer(t, "tokens") if self.config.attend_across == "tokens" else layer(t.reshape(1, -1, t.shape[-1])).reshape(t.shape)
        h = x + e + self.spatial_ch_projs(t[:, 0])[..., None, None]
        return self.control(h, emb, encoder_hidden_states, attention_mask, cross_attention_kwargs)

    # ------------------------------------------------------------------ diffusers interop

    def diffusers_config(self) -> dict:
        if self.config.attend_across != "batch":
            raise ValueError("a union ControlNet with attend_across='tokens' has no diffusers equivalent")
        config = super().diffusers_config()
        for key in ("attend_across", "mid_block_type"):  # ours only; diffusers' union always has the cross-attention middle block
            config.pop(key)
        return config


def is_union(config) -> bool:
    """A union ControlNet's config (or a state dict's keys) names its control-type count / task embedding."""
    return "num_control_type" in config or "task_embedding" in config


__all__ = ["CONTROL_TYPES", "UnionConditions", "UnionControlNet", "control_type_index", "control_type_names", "is_union"]
