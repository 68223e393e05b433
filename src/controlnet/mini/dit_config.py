"""The miniature Flux-shaped base (`mini-dit`) recipe: sizes and training settings in one place.

It reuses the miniature SD's autoencoder (8× down, 4 latent channels) and CLIP text encoder /
tokenizer (width 96, 32 tokens): the CLIP's token states stand where Flux has T5's, its pooled
vector where Flux has CLIP's. Flux packs 2×2 latent cells into one token, so a 64-px picture is
4×4 = 16 image tokens of 16 channels. Sizes were set by one-thread step times and the byte budget
(transformer + ControlNet ≤ 3.2 MB in fp16; docs/mini.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from controlnet import checks
from controlnet.files import write_json
from controlnet.mini.config import StageConfig, read_recipe


@dataclass
class MiniDiTConfig:
    image_size: int = 64
    world_seed: int = 0  # training samples; held-out samples use world_seed + 1
    latent_samples: int = 12_000  # world samples encoded once (latents and text states); a small model, few epochs
    # FluxTransformer2DModel: width 64 (4 heads of 16), 2 double-stream + 4 single-stream blocks
    width: int = 64
    heads: int = 4
    double_blocks: int = 2
    single_blocks: int = 4
    # training: rectified flow, logit-normal σ, 10% empty captions (true CFG), EMA
    empty_caption_rate: float = 0.1
    ema_decay: float = 0.998  # a short run: the average of the last ~500 steps
    # Step counts are the recipe (the same weights on any machine); the budget only caps a stage on a slow
    # one (base 60%, ControlNet 35%). One free core: ~0.24 s per base step, ~0.2 s per ControlNet step.
    budget_minutes: float = 240.0
    base: StageConfig = field(default_factory=lambda: StageConfig(32, 5e-4, 3_000, 0.6, warmup_steps=100))
    # the XLabs-style ControlNet: copies of the base's first double and single blocks and a pixel hint encoder
    # (the single block's residual, reaching the base's last blocks, lifted 1-px F1 0.532 -> 0.554; docs/mini.md);
    # small batches: the zero-initialised layers need steps more than samples to start
    controlnet: StageConfig = field(default_factory=lambda: StageConfig(16, 1e-3, 5_000, 0.35, warmup_steps=0))
    controlnet_double_blocks: int = 1
    controlnet_single_blocks: int = 1  # copies of the base's first single blocks; their residual reaches its single blocks
    controlnet_samples: int = 8000
    # its pixel hint encoder: conv widths (conv_in, then each 2× down) and the channels it ends in per latent
    # cell (2×2 of them make a token); XLabs' own are 16s and in_channels / 4 = 4 (wider did not help)
    controlnet_hint_widths: tuple[int, ...] = (16, 16, 16, 16)
    controlnet_hint_channels: int = 4

    @classmethod
    def tiny(cls) -> MiniDiTConfig:
        """Seconds-long settings for tests and CI: same code paths, toy sizes."""
        return cls(latent_samples=64, width=32, heads=2, double_blocks=1, single_blocks=1,
                   base=StageConfig(4, 1e-3, 3, 1.0, warmup_steps=1),
                   controlnet=StageConfig(4, 1e-3, 3, 1.0, warmup_steps=0), controlnet_double_blocks=1,
                   controlnet_samples=16, controlnet_single_blocks=1,
                   controlnet_hint_widths=(8, 8, 16, 16), controlnet_hint_channels=8)

    def check(self) -> MiniDiTConfig:
        checks.number("budget_minutes", self.budget_minutes, lo=0.0, lo_open=True)
        checks.integer("world_seed", self.world_seed, lo=0)
        return self

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> MiniDiTConfig:
        """Read a recipe.json; a damaged one is an InputError naming the file."""

        def build(d: dict) -> MiniDiTConfig:
            d["base"], d["controlnet"] = StageConfig(**d["base"]), StageConfig(**d["controlnet"])
            if "controlnet_hint_widths" in d:
                d["controlnet_hint_widths"] = tuple(d["controlnet_hint_widths"])
            return cls(**d)

        return read_recipe(path, build)
