"""ControlNets for diffusion-transformer bases: SD3/SD3.5 and Flux (paper §3.2 on a DiT).

Each is a truncated trainable copy of the base transformer, a zero-initialised projection of the
control latent added to the patch-embedded tokens, and one zero `Linear` per copied block. Modules
are named exactly as diffusers' `SD3ControlNetModel` / `FluxControlNetModel` name them, so our
state dicts *are* the diffusers layout and the configs are theirs; the blocks are diffusers' own
(`JointTransformerBlock`, `SD3SingleTransformerBlock`, `FluxTransformerBlock`, ...), as the base's.
The forwards return `DiTResiduals`, which carry the family's index rule into `controlled_transformer`.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import JointTransformerBlock
from diffusers.models.embeddings import (
    CombinedTimestepGuidanceTextProjEmbeddings,
    CombinedTimestepTextProjEmbeddings,
    PatchEmbed,
)
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_flux import (
    FluxPosEmbed,
    FluxSingleTransformerBlock,
    FluxTransformerBlock,
)
from diffusers.models.transformers.transformer_sd3 import SD3SingleTransformerBlock
from torch import nn

from controlnet.nn.controlled_transformer import DiTResiduals
from controlnet.nn.hint_encoder import HintEncoder


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# Pixel transforms a hint goes through before the VAE, per model (images in [0, 1]); data, not code paths.
HINT_TRANSFORMS = {
    "identity": lambda img: img,
    "sd35-canny": lambda img: img * 255 * 0.5 + 0.5,  # SAI SD3.5 canny (ComfyUI preprocess_image; diffusers #10020)
    "invert": lambda img: 1 - img,  # SAI SD3.5 depth: near is dark
}
# The SAI SD3.5-Large files store a scalar `control_type`: which hint they were trained on.
SD35_CONTROL_TYPES = {0: ("blur", "identity"), 1: ("canny", "sd35-canny"), 2: ("depth", "invert")}
# Shakker-Labs / InstantX Flux union modes (model card), the index into `controlnet_mode_embedder`.
FLUX_UNION_MODES = {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5, "lq": 6}
XLABS_HINT_WIDTHS = (16, 16, 16, 16)  # x-flux's input_hint_block (and diffusers' FluxControlNetModel)


def hint_transform_fn(name: str):
    """The pixel transform `name` (a key of HINT_TRANSFORMS), or a ValueError listing them."""
    try:
        return HINT_TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown hint transform {name!r}; one of {', '.join(HINT_TRANSFORMS)}") from None


def _same_tokens(control: torch.Tensor, tokens: torch.Tensor, wanted: str) -> None:
    """A control input of another size would broadcast silently (diffusers adds it anyway)."""
    if control.shape[1] != tokens.shape[1]:
        raise ValueError(f"the control input gives {control.shape[1]} tokens but the image has {tokens.shape[1]}: "
                         f"this ControlNet takes {wanted}")


def refuse_on_unet(cn, label: str, base: str) -> None:
    """A DiT ControlNet handed to a U-Net pipeline or trainer fails with this line, not deep in a forward."""
    from controlnet.errors import InputError

    if isinstance(cn, (SD3ControlNet, FluxControlNet)):
        raise InputError(f"{label} is a {cn.family} for a transformer base (SD3/Flux), but the base model is a "
                         f"{base} U-Net; use a ControlNet trained for {base}")


class SD3ControlNet(ModelMixin, ConfigMixin):
    """`SD3ControlNetModel`'s network: InstantX (joint blocks, zero pooled projections), the SAI
    SD3.5-Large files (`joint_attention_dim=None`: single blocks, no text stream, the base's
    positional embedding) and the 17-channel inpainting net (`extra_conditioning_channels=1`)."""

    index_rule = "sd3"

    @register_to_config
    def __init__(
        self,
        sample_size: int = 128,
        patch_size: int = 2,
        in_channels: int = 16,
        num_layers: int = 18,
        attention_head_dim: int = 64,
        num_attention_heads: int = 18,
        joint_attention_dim: int | None = 4096,
        caption_projection_dim: int = 1152,
        pooled_projection_dim: int = 2048,
        out_channels: int = 16,
        pos_embed_max_size: int | None = 96,
        extra_conditioning_channels: int = 0,
        dual_attention_layers: tuple[int, ...] = (),
        qk_norm: str | None = None,
        pos_embed_type: str | None = "sincos",
        use_pos_embed: bool = True,
        force_zeros_for_pooled_projection: bool = True,
        hint_transform: str = "identity",
    ):
        super().__init__()
        hint_transform_fn(hint_transform)  # a bad name fails here, not at sampling time
        self.inner_dim = inner = num_attention_heads * attention_head_dim
        self.pos_embed = PatchEmbed(
            height=sample_size, width=sample_size, patch_size=patch_size, in_channels=in_channels, embed_dim=inner,
            pos_embed_max_size=pos_embed_max_size, pos_embed_type=pos_embed_type,
        ) if use_pos_embed else None
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(embedding_dim=inner, pooled_projection_dim=pooled_projection_dim)
        if joint_attention_dim is not None:
            self.context_embedder = nn.Linear(joint_attention_dim, caption_projection_dim)
            self.transformer_blocks = nn.ModuleList([
                JointTransformerBlock(dim=inner, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
                                      context_pre_only=False, qk_norm=qk_norm, use_dual_attention=i in dual_attention_layers)
                for i in range(num_layers)
            ])
        else:
            self.context_embedder = None
            self.transformer_blocks = nn.ModuleList([
                SD3SingleTransformerBlock(dim=inner, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim)
                for _ in range(num_layers)
            ])
        self.controlnet_blocks = nn.ModuleList([_zero(nn.Linear(inner, inner)) for _ in range(num_layers)])
        self.pos_embed_input = _zero(PatchEmbed(
            height=sample_size, width=sample_size, patch_size=patch_size,
            in_channels=in_channels + extra_conditioning_channels, embed_dim=inner, pos_embed_type=None,
        ))

    @classmethod
    def from_transformer(cls, transformer, num_layers: int) -> SD3ControlNet:
        """The paper's copy for training: the base's first `num_layers` joint blocks, its embeddings, zero
        connections; real pooled projections and the shifted control latent, as `train_controlnet_sd3.py`
        feeds them (`force_zeros_for_pooled_projection=False`, so sampling feeds the same)."""
        c = transformer.config
        net = cls(sample_size=c.sample_size, patch_size=c.patch_size, in_channels=c.in_channels, num_layers=num_layers,
                  attention_head_dim=c.attention_head_dim, num_attention_heads=c.num_attention_heads,
                  joint_attention_dim=c.joint_attention_dim, caption_projection_dim=c.caption_projection_dim,
                  pooled_projection_dim=c.pooled_projection_dim, out_channels=c.out_channels,
                  pos_embed_max_size=c.pos_embed_max_size, qk_norm=c.get("qk_norm"),
                  dual_attention_layers=tuple(i for i in c.get("dual_attention_layers", ()) if i < num_layers),
                  force_zeros_for_pooled_projection=False)
        for name in ("pos_embed", "time_text_embed", "context_embedder"):
            getattr(net, name).load_state_dict(getattr(transformer, name).state_dict())
        for block, source in zip(net.transformer_blocks, transformer.transformer_blocks):
            block.load_state_dict(source.state_dict())
        return net if transformer.dtype == torch.float32 else net.to(transformer.dtype)

    @property
    def family(self) -> str:
        if self.context_embedder is None:
            return "sd3.5-large-controlnet (SAI)"
        return "sd3-controlnet-inpaint" if self.config.extra_conditioning_channels else "sd3-controlnet"

    def forward(
        self,
        hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        timestep: torch.Tensor,
        pooled_projections: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        conditioning_scale: float | torch.Tensor = 1.0,
        base_pos_embed: nn.Module | None = None,
    ) -> DiTResiduals:
        """Z(F(x + Z(c))) for every copied block. `hidden_states` is the latent (B, C, H, W);
        `controlnet_cond` the control latent (with the mask channel for inpainting). The SAI nets
        have no positional embedding of their own: pass the base's as `base_pos_embed`."""
        pos_embed = self.pos_embed if self.pos_embed is not None else base_pos_embed
        if pos_embed is None:
            raise ValueError("this SD3.5 ControlNet uses its base model's positional embedding: pass base_pos_embed")
        if (self.context_embedder is None) != (encoder_hidden_states is None):
            raise ValueError("encoder_hidden_states must be given exactly when the ControlNet has a text stream "
                             f"({'it has none' if self.context_embedder is None else 'it has one'})")
        h = pos_embed(hidden_states)
        temb = self.time_text_embed(timestep, pooled_projections)
        ctx = self.context_embedder(encoder_hidden_states) if self.context_embedder is not None else None
        c = self.pos_embed_input(controlnet_cond)
        _same_tokens(c, h, "the control latent at the latent's size")
        h = h + c
        samples = []
        for block, zero_linear in zip(self.transformer_blocks, self.controlnet_blocks):
            if ctx is not None:
                ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb)
            else:
                h = block(h, temb)
            samples.append(zero_linear(h) * conditioning_scale)
        return DiTResiduals(tuple(samples), (), self.index_rule)


def _own_widths(widths) -> tuple[int, ...] | None:
    """Hint encoder widths as the config keeps them: None for XLabs' own."""
    return None if not widths or tuple(widths) == XLABS_HINT_WIDTHS else tuple(widths)


class FluxControlNet(ModelMixin, ConfigMixin):
    """`FluxControlNetModel`'s network: InstantX / Shakker (zero `controlnet_x_embedder` on packed
    latents), the union nets (`num_mode`: a mode token before the text) and the XLabs nets
    (`conditioning_embedding_channels`: a pixel-space hint encoder, cyclic block mapping)."""

    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, ...] = (16, 56, 56),
        num_mode: int | None = None,
        conditioning_embedding_channels: int | None = None,
        hint_widths: tuple[int, ...] | None = None,
    ):
        super().__init__()
        self.inner_dim = inner = num_attention_heads * attention_head_dim
        self.pos_embed = FluxPosEmbed(theta=10000, axes_dim=list(axes_dims_rope))
        embed_cls = CombinedTimestepGuidanceTextProjEmbeddings if guidance_embeds else CombinedTimestepTextProjEmbeddings
        self.time_text_embed = embed_cls(embedding_dim=inner, pooled_projection_dim=pooled_projection_dim)
        self.context_embedder = nn.Linear(joint_attention_dim, inner)
        self.x_embedder = nn.Linear(in_channels, inner)
        heads = {"dim": inner, "num_attention_heads": num_attention_heads, "attention_head_dim": attention_head_dim}
        self.transformer_blocks = nn.ModuleList([FluxTransformerBlock(**heads) for _ in range(num_layers)])
        self.single_transformer_blocks = nn.ModuleList([FluxSingleTransformerBlock(**heads) for _ in range(num_single_layers)])
        self.controlnet_blocks = nn.ModuleList([_zero(nn.Linear(inner, inner)) for _ in range(num_layers)])
        self.controlnet_single_blocks = nn.ModuleList([_zero(nn.Linear(inner, inner)) for _ in range(num_single_layers)])
        if num_mode is not None:
            self.controlnet_mode_embedder = nn.Embedding(num_mode, inner)
        if conditioning_embedding_channels is not None:
            self.input_hint_block = HintEncoder(conditioning_embedding_channels, widths=tuple(hint_widths or XLABS_HINT_WIDTHS))
            # after the hint encoder: not zero; its 2×2 patches (in_channels wide in every published net)
            self.controlnet_x_embedder = nn.Linear(conditioning_embedding_channels * patch_size**2, inner)
        else:
            self.input_hint_block = None
            self.controlnet_x_embedder = _zero(nn.Linear(in_channels, inner))

    @classmethod
    def from_transformer(cls, transformer, num_layers: int, num_single_layers: int, *, pixel_hint: bool = False,
                         hint_channels: int | None = None, hint_widths: tuple[int, ...] | None = None) -> FluxControlNet:
        """The paper's copy for training (`FluxControlNetModel.from_transformer`): the base's first blocks of
        each kind, its embeddings, zero connections and a zero `controlnet_x_embedder`. `pixel_hint`: the
        XLabs layout instead, a hint encoder from pixels onto the latent grid (zero last conv), whose 2×2
        patches make the tokens; it ends in `hint_channels` (XLabs: in_channels / 4) after convs of
        `hint_widths` (XLabs: 16 each). Wider than XLabs' is this package's variant (diffusers cannot load it)."""
        c = transformer.config
        hint = dict(patch_size=2, conditioning_embedding_channels=hint_channels or c.in_channels // 4,
                    hint_widths=_own_widths(hint_widths)) if pixel_hint \
            else dict(patch_size=c.patch_size)
        net = cls(in_channels=c.in_channels, num_layers=num_layers,
                  num_single_layers=num_single_layers, attention_head_dim=c.attention_head_dim,
                  num_attention_heads=c.num_attention_heads, joint_attention_dim=c.joint_attention_dim,
                  pooled_projection_dim=c.pooled_projection_dim, guidance_embeds=c.guidance_embeds,
                  axes_dims_rope=tuple(c.axes_dims_rope), **hint)
        for name in ("pos_embed", "time_text_embed", "context_embedder", "x_embedder"):
            getattr(net, name).load_state_dict(getattr(transformer, name).state_dict())
        for mine, theirs in ((net.transformer_blocks, transformer.transformer_blocks),
                             (net.single_transformer_blocks, transformer.single_transformer_blocks)):
            for block, source in zip(mine, theirs):
                block.load_state_dict(source.state_dict())
        return net if transformer.dtype == torch.float32 else net.to(transformer.dtype)

    @property
    def index_rule(self) -> str:
        """XLabs nets repeat cyclically; all others use the Flux interval rule (diffusers' pipelines
        set `controlnet_blocks_repeat` exactly when there is a hint encoder)."""
        return "xlabs" if self.input_hint_block is not None else "flux"

    @property
    def family(self) -> str:
        if self.input_hint_block is not None:
            return "flux-controlnet-xlabs"
        return "flux-controlnet-union" if self.config.num_mode is not None else "flux-controlnet"

    def _pack_hint(self, hint: torch.Tensor) -> torch.Tensor:
        """XLabs: pixels in [-1, 1] through the hint encoder, then patches of `patch_size`² into tokens."""
        cond = self.input_hint_block(hint)
        b, c, hp, wp = cond.shape
        p = self.config.patch_size
        cond = cond.reshape(b, c, hp // p, p, wp // p, p).permute(0, 2, 4, 1, 3, 5)
        return cond.reshape(b, (hp // p) * (wp // p), c * p * p)

    def forward(
        self,
        hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        timestep: torch.Tensor,
        pooled_projections: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        controlnet_mode: torch.Tensor | None = None,
        conditioning_scale: float | torch.Tensor = 1.0,
    ) -> DiTResiduals:
        """Z(F(x + Z(c))) for every copied block; tokens packed as Flux packs them, `timestep` and
        `guidance` as the pipelines pass them (t/1000). Union nets need `controlnet_mode` (B, 1)."""
        h = self.x_embedder(hidden_states)
        if self.input_hint_block is not None:
            controlnet_cond = self._pack_hint(controlnet_cond)
        _same_tokens(controlnet_cond, h, "pixels 16× the token grid (8× the latent, then 2×2 patches)"
                     if self.input_hint_block is not None else "the packed control latent")
        h = h + self.controlnet_x_embedder(controlnet_cond)
        timestep = timestep.to(h.dtype) * 1000
        temb = (self.time_text_embed(timestep, pooled_projections) if guidance is None
                else self.time_text_embed(timestep, guidance.to(h.dtype) * 1000, pooled_projections))
        ctx = self.context_embedder(encoder_hidden_states)
        if self.config.num_mode is not None:
            if controlnet_mode is None:
                raise ValueError(f"this union ControlNet needs a control mode (0..{self.config.num_mode - 1})")
            ctx = torch.cat([self.controlnet_mode_embedder(controlnet_mode), ctx], dim=1)
            txt_ids = torch.cat([txt_ids[:1], txt_ids], dim=0)
        rotary = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
        double, single = [], []
        for block, zero_linear in zip(self.transformer_blocks, self.controlnet_blocks):
            ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary)
            double.append(zero_linear(h) * conditioning_scale)
        for block, zero_linear in zip(self.single_transformer_blocks, self.controlnet_single_blocks):
            ctx, h = block(hidden_states=h, encoder_hidden_states=ctx, temb=temb, image_rotary_emb=rotary)
            single.append(zero_linear(h) * conditioning_scale)
        return DiTResiduals(tuple(double), tuple(single), self.index_rule)
