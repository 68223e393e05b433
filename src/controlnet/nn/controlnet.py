"""The ControlNet of the paper (§3.2): a trainable copy of a U-Net's encoder and middle block, a hint
encoder, and one zero convolution per connection back into the locked U-Net.

Modules are named exactly as diffusers names them (`conv_in`, `time_embedding`, `down_blocks`,
`controlnet_cond_embedding`, `controlnet_down_blocks`, `controlnet_mid_block`, ...), so our native
state dict *is* the diffusers layout and the config is a superset of `ControlNetModel`'s. The
blocks themselves are diffusers' (`get_down_block`, `UNetMidBlock2DCrossAttn`): the U-Net is theirs,
the ControlNet around it is ours.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, UNetMidBlock2DCrossAttn, get_down_block
from torch import nn

from controlnet.nn.connections import connections
from controlnet.nn.hint_encoder import HintEncoder, default_widths
from controlnet.nn.lite import LiteEncoder
from controlnet.nn.residuals import ControlResiduals
from controlnet.nn.unet_parts import additive_mask, encoder_blocks
from controlnet.nn.zero_conv import connection_conv

# U-Net config keys the ControlNet copies (diffusers' `from_unet` list).
UNET_KEYS = (
    "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "mid_block_type",
    "only_cross_attention", "block_out_channels", "layers_per_block", "downsample_padding",
    "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
    "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "class_embed_type", "addition_embed_type",
    "addition_time_embed_dim", "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim",
)
# Our options that diffusers' ControlNetModel does not have; `to_diffusers` needs their defaults.
OWN_DEFAULTS = {"hint_encoder": "code", "connection_init": "zero", "copy": "full"}


def _per_block(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _check_supported(c) -> None:
    if c.encoder_hid_dim_type is not None or c.encoder_hid_dim is not None:
        raise ValueError("U-Nets with encoder_hid_proj (Kandinsky-style) are not supported")
    if c.addition_embed_type not in (None, "text_time"):
        raise ValueError(f"addition_embed_type {c.addition_embed_type!r} is not supported (None or 'text_time')")
    if c.copy not in ("full", "lite"):
        raise ValueError(f"copy must be 'full' or 'lite', got {c.copy!r}")
    if len(c.block_out_channels) != len(c.down_block_types):
        raise ValueError("block_out_channels and down_block_types must have the same length")


def _attention(c) -> tuple[list, list, list]:
    """Per level: heads, head widths (diffusers' naming: `attention_head_dim` means heads when
    `num_attention_heads` is unset) and transformer depth."""
    n = len(c.down_block_types)
    heads = _per_block(c.num_attention_heads or c.attention_head_dim, n)
    return heads, _per_block(c.attention_head_dim, n), _per_block(c.transformer_layers_per_block, n)


def _down_blocks(c, temb: int) -> nn.ModuleList:
    """The trainable copy's down blocks, built as the U-Net builds them."""
    heads, head_dims, depth = _attention(c)
    cross_only = _per_block(c.only_cross_attention, len(c.down_block_types))
    blocks, out_ch = nn.ModuleList(), c.block_out_channels[0]
    for i, block_type in enumerate(c.down_block_types):
        in_ch, out_ch = out_ch, c.block_out_channels[i]
        blocks.append(get_down_block(
            block_type, num_layers=c.layers_per_block, transformer_layers_per_block=depth[i], in_channels=in_ch,
            out_channels=out_ch, temb_channels=temb, add_downsample=i < len(c.down_block_types) - 1,
            resnet_eps=c.norm_eps, resnet_act_fn=c.act_fn, resnet_groups=c.norm_num_groups,
            cross_attention_dim=c.cross_attention_dim, num_attention_heads=heads[i],
            attention_head_dim=head_dims[i] if head_dims[i] is not None else out_ch,
            downsample_padding=c.downsample_padding, use_linear_projection=c.use_linear_projection,
            only_cross_attention=cross_only[i], upcast_attention=c.upcast_attention,
            resnet_time_scale_shift=c.resnet_time_scale_shift,
        ))
    return blocks


def _mid_block(c, temb: int) -> nn.Module:
    heads, _, depth = _attention(c)
    common = dict(in_channels=c.block_out_channels[-1], temb_channels=temb, resnet_eps=c.norm_eps,
                  resnet_act_fn=c.act_fn, output_scale_factor=c.mid_block_scale_factor,
                  resnet_groups=c.norm_num_groups, resnet_time_scale_shift=c.resnet_time_scale_shift)
    if c.mid_block_type == "UNetMidBlock2DCrossAttn":
        return UNetMidBlock2DCrossAttn(
            **common, transformer_layers_per_block=depth[-1], cross_attention_dim=c.cross_attention_dim,
            num_attention_heads=heads[-1], use_linear_projection=c.use_linear_projection,
            upcast_attention=c.upcast_attention,
        )
    if c.mid_block_type == "UNetMidBlock2D":
        return UNetMidBlock2D(**common, num_layers=0, add_attention=False)
    raise ValueError(f"unknown mid_block_type {c.mid_block_type!r}")


def _class_embedding(kind, num_class_embeds, projection_dim, width, temb):
    if kind is None and num_class_embeds is not None:
        return nn.Embedding(num_class_embeds, temb)
    if kind == "timestep":
        return TimestepEmbedding(width, temb)
    if kind == "identity":
        return nn.Identity()
    if kind == "projection":
        return TimestepEmbedding(projection_dim, temb)
    if kind is None:
        return None
    raise ValueError(f"class_embed_type {kind!r} is not supported")


class ControlNet(ModelMixin, ConfigMixin):
    """Call it as `cn(sample, timestep, encoder_hidden_states, hint)` → `ControlResiduals(down, mid)`.

    Residuals come out unscaled (weights, guess-mode scales and masks are the sampler's business),
    except for `global_pool_conditions`, which is part of what the shuffle model *is*.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True
    diffusers_class_name = "ControlNetModel"  # the diffusers class with the same config and state dict

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 3,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        projection_class_embeddings_input_dim: int | None = None,
        controlnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] | None = (16, 32, 96, 256),
        global_pool_conditions: bool = False,
        addition_embed_type_num_heads: int = 64,
        hint_encoder: str = "code",
        connection_init: str = "zero",
        copy: str = "full",
    ):
        super().__init__()
        _check_supported(self.config)
        width, temb = block_out_channels[0], block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.time_proj = Timesteps(width, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(width, temb, act_fn=act_fn)
        self.class_embedding = _class_embedding(class_embed_type, num_class_embeds, projection_class_embeddings_input_dim, width, temb)
        if addition_embed_type == "text_time":
            self.add_time_proj = Timesteps(addition_time_embed_dim, flip_sin_to_cos, freq_shift)
            self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, temb)
        hint_widths = conditioning_embedding_out_channels or default_widths(hint_encoder, 8)
        self.controlnet_cond_embedding = HintEncoder(width, conditioning_channels, tuple(hint_widths), hint_encoder)
        links = connections(self.config)
        if copy == "full":
            self.down_blocks = _down_blocks(self.config, temb)
            self.mid_block = _mid_block(self.config, temb)
        else:  # ControlNet-lite (paper §4.2): the trainable copy becomes one conv per connection
            self.lite = LiteEncoder(links)
        self.controlnet_down_blocks = nn.ModuleList(connection_conv(connection_init, c.channels) for c in links[:-1])
        self.controlnet_mid_block = connection_conv(connection_init, links[-1].channels)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_unet(
        cls,
        unet,
        *,
        hint_channels: int = 3,
        vae_scale_factor: int = 8,
        hint_encoder: str = "code",
        hint_widths: tuple[int, ...] | None = None,
        global_pool: bool = False,
        connection_init: str = "zero",
        copy: str = "full",
        channel_order: str = "rgb",
        load_weights: bool = True,
        device: str | torch.device | None = None,
        **extra,
    ) -> ControlNet:
        """The trainable copy of a diffusers `UNet2DConditionModel`, weights copied.

        `vae_scale_factor` sets how many stride-2 convs the hint encoder has (8 → three, as in every
        public checkpoint). `connection_init="gaussian"` and `copy="lite"` are the paper's ablations.
        Works on the meta device too (for counting parameters without allocating them); `device`
        (default: the U-Net's) is where the ControlNet is built. `extra`: a subclass's own config.
        """
        _check_is(unet, "block_out_channels", "from_unet", "UNet2DConditionModel", "unet")
        uc = unet.config
        config = {**{k: uc[k] for k in UNET_KEYS if k in uc}, **extra}
        device = torch.device(device) if device is not None else next(unet.parameters()).device
        with torch.device(device):
            cn = cls(
                **config,
                conditioning_channels=hint_channels,
                conditioning_embedding_out_channels=tuple(hint_widths or default_widths(hint_encoder, vae_scale_factor)),
                global_pool_conditions=global_pool,
                controlnet_conditioning_channel_order=channel_order,
                hint_encoder=hint_encoder,
                connection_init=connection_init,
                copy=copy,
            )
        if load_weights:
            copied = ["conv_in", "time_embedding", "class_embedding", "add_embedding"]
            copied += ["down_blocks", "mid_block"] if copy == "full" else []
            for name in copied:
                target = getattr(cn, name, None)
                if target is not None and not isinstance(target, nn.Identity):
                    target.load_state_dict(getattr(unet, name).state_dict(), assign=device.type == "meta")
        return cn

    # ------------------------------------------------------------------ facts

    @property
    def num_connections(self) -> int:
        """Residuals handed to the U-Net: 13 for SD 1.x/2.x, 10 for SDXL."""
        return len(self.controlnet_down_blocks) + 1

    @property
    def hint_downscale(self) -> int:
        """Pixels of hint per latent pixel (the VAE scale factor this ControlNet was made for)."""
        return self.controlnet_cond_embedding.downscale_factor

    @property
    def family(self) -> str:
        """A best guess at the base model family from the cross-attention width."""
        return family_of(self.config)

    # ------------------------------------------------------------------ forward

    def embed_hint(self, hint: torch.Tensor) -> torch.Tensor:
        """E(c): compute once per image and pass as `hint_embedding=` on every step."""
        if self.config.controlnet_conditioning_channel_order == "bgr":
            hint = torch.flip(hint, dims=[1])
        return self.controlnet_cond_embedding(hint.to(self.dtype))

    def time_embed(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None, class_labels=None, timestep_cond=None):
        """Time (+ class / SDXL text-time) embedding, computed as the U-Net computes it."""
        t = timestep
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.float64 if isinstance(t, float) else torch.int64, device=sample.device)
            if sample.device.type == "mps" and t.dtype == torch.float64:
                t = t.float()
        elif t.ndim == 0:
            t = t[None].to(sample.device)
        t = t.expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype), timestep_cond)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this ControlNet has a class embedding: pass class_labels")
            if self.config.class_embed_type == "timestep":
                class_labels = self.time_proj(class_labels)
            emb = emb + self.class_embedding(class_labels).to(emb.dtype)
        if self.config.addition_embed_type == "text_time":
            if not added_cond_kwargs or "text_embeds" not in added_cond_kwargs or "time_ids" not in added_cond_kwargs:
                raise ValueError("an SDXL ControlNet needs added_cond_kwargs={'text_embeds': ..., 'time_ids': ...}")
            text_embeds = added_cond_kwargs["text_embeds"]
            time_embeds = self.add_time_proj(added_cond_kwargs["time_ids"].flatten()).reshape(text_embeds.shape[0], -1)
            emb = emb + self.add_embedding(torch.concat([text_embeds, time_embeds], dim=-1).to(emb.dtype))
        return emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        hint: torch.Tensor | None = None,
        *,
        hint_embedding: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> ControlResiduals:
        """Residuals Z(F(x + Z(c; Θz1); Θc); Θz2) for a batch (paper §3.1; `controlled_unet` adds them
        to the locked U-Net's F(x; Θ)): x is `conv_in(sample)`, Z(c; Θz1) the hint encoder (its last
        conv is zero-initialised), Θc the trainable copy, Θz2 the zero convs. `hint` is (B, C, H, W) in [0, 1] at `hint_downscale` × the latent
        size; or give `hint_embedding` from `embed_hint`. A hint (embedding) whose batch divides the
        sample's is tiled, so one hint serves both halves of a classifier-free-guidance batch."""
        if hint_embedding is None:
            if hint is None:
                raise ValueError("pass a hint image or its hint_embedding")
            hint_embedding = self.embed_hint(hint)
        hint_embedding = _tile_batch(hint_embedding, sample.shape[0], "hint")
        if hint_embedding.shape[-2:] != sample.shape[-2:]:
            raise ValueError(
                f"hint of {tuple(hint_embedding.shape[-2:])} latent pixels does not match the sample's "
                f"{tuple(sample.shape[-2:])}: the hint must be {self.hint_downscale}x the latent size"
            )
        h = self.conv_in(sample) + hint_embedding.to(sample.dtype)                 # x + Z(c; Θz1)
        emb = None if self.config.copy == "lite" else self.time_embed(
            sample, timestep, encoder_hidden_states, added_cond_kwargs, class_labels, timestep_cond)
        return self.control(h, emb, encoder_hidden_states, attention_mask, cross_attention_kwargs)

    def control(self, h, emb, encoder_hidden_states, attention_mask=None, cross_attention_kwargs=None) -> ControlResiduals:
        """Z(F(h; Θc); Θz2) from h = x + Z(c; Θz1) and the time embedding (None for ControlNet-lite)."""
        attn = dict(encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=cross_attention_kwargs,
                    attention_mask=additive_mask(attention_mask, h.dtype))
        if self.config.copy == "lite":
            features, h = self.lite(h)
        else:
            features, h = encoder_blocks(self, h, emb, attn)                        # F(x + Z(c; Θz1); Θc)
        out = ControlResiduals(                                                     # Z(F(...); Θz2)
            tuple(conv(f) for conv, f in zip(self.controlnet_down_blocks, features, strict=True)),
            self.controlnet_mid_block(h),
        )
        return out.pooled() if self.config.global_pool_conditions else out

    # ------------------------------------------------------------------ diffusers interop

    def diffusers_config(self) -> dict:
        """This model's config as diffusers' `ControlNetModel` takes it."""
        for key, default in OWN_DEFAULTS.items():
            if self.config[key] != default:
                raise ValueError(f"a ControlNet with {key}={self.config[key]!r} has no diffusers equivalent")
        skip = set(OWN_DEFAULTS)
        return {k: v for k, v in self.config.items() if not k.startswith("_") and k not in skip}

    def to_diffusers(self):
        """An equivalent diffusers `ControlNetModel` holding copies of these weights."""
        import diffusers

        model = getattr(diffusers, self.diffusers_class_name)(**self.diffusers_config())
        model.load_state_dict(self.state_dict(), strict=True)
        return model.to(self.device) if self.dtype == torch.float32 else model.to(self.device, self.dtype)

    @classmethod
    def from_diffusers(cls, model) -> ControlNet:
        """Our ControlNet holding copies of a diffusers `ControlNetModel`'s weights."""
        _check_is(model, "conditioning_embedding_out_channels", "from_diffusers", "ControlNetModel", "controlnet",
                  "a U-Net converts with ControlNet.from_unet")
        config = {k: v for k, v in model.config.items() if not k.startswith("_")}
        cn = cls(**config)
        cn.load_state_dict(model.state_dict(), strict=True)
        return cn.to(model.device) if model.dtype == torch.float32 else cn.to(model.device, model.dtype)


def family_of(config) -> str:
    """SD 1.x / SD 2.x / SDXL / custom, from the cross-attention width and the added embedding."""
    if config.get("addition_embed_type") == "text_time":
        return "sdxl" if config.get("cross_attention_dim") == 2048 else "sdxl-like"
    return {768: "sd1", 1024: "sd2"}.get(config.get("cross_attention_dim"), "custom")


def _tile_batch(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"{what} batch {x.shape[0]} does not divide the sample batch {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["ControlNet", "count_parameters", "family_of"]


def _check_is(model, config_key: str, method: str, wanted: str, attribute: str, other: str = "") -> None:
    """A model of the wanted diffusers class (told by a key of its config), else an InputError naming what
    was given and, for a pipeline, the attribute that holds the wanted model."""
    from controlnet.errors import InputError

    config = getattr(model, "config", None)
    if hasattr(model, "parameters") and hasattr(config, "keys") and config_key in config:
        return
    hint = f"; a pipeline's is its .{attribute}: ControlNet.{method}(pipe.{attribute})" if hasattr(model, attribute) else ""
    hint += f"; {other}" if other and not hint else ""
    raise InputError(f"ControlNet.{method} takes a diffusers {wanted}, got a {type(model).__name__}{hint}")
