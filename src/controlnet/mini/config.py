"""The miniature Stable Diffusion recipe: model sizes and training settings in one place.

Sizes were chosen by measuring one-thread CPU step times (docs/mini.md): the autoencoder is the
costly part (it runs at full 64×64 resolution), the UNet works on 8×8 latents and is cheap per
sample, and everything, three ControlNets included, has to fit in 25 MB as fp16.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError
from controlnet.files import writable_folder, write_json


@dataclass
class StageConfig:
    batch_size: int
    lr: float
    max_steps: int  # cap; the time budget usually decides the step count
    budget_share: float  # share of the whole recipe's time budget (ControlNet stages keep the rest)
    warmup_steps: int = 100


@dataclass
class MiniConfig:
    image_size: int = 64
    world_seed: int = 0  # training samples; held-out samples use world_seed + 1
    # autoencoder: 4 levels → 8× downsampling, 4 latent channels, as in SD
    vae_channels: tuple[int, ...] = (8, 16, 32, 64)  # thin at full resolution: 1.7× the steps per second
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 4  # few groups: per-channel norms would erase flat colours (1 group = instance norm)
    kl_weight: float = 1e-6  # times the per-sample KL sum, next to per-pixel mean reconstruction losses
    edge_weight: float = 0.1  # L1 on image gradients: sharper outlines (0.5 slowed colours down, measured)
    latent_anchor_weight: float = 1.0  # latents' first 3 channels ≈ the 8×8 mean colour (see vae_stage)
    # UNet on 8×8 latents, SD-1.x block types, three levels
    unet_channels: tuple[int, ...] = (32, 64, 96)
    unet_layers_per_block: int = 1
    unet_norm_groups: int = 8
    attention_heads: int = 4
    # CLIP text encoder
    text_hidden: int = 96
    text_layers: int = 3
    text_heads: int = 4
    max_length: int = 32
    # training
    empty_caption_rate: float = 0.1  # so classifier-free guidance has an unconditional model
    snr_gamma: float = 5.0  # min-SNR loss weighting (faster convergence); 0 = plain MSE
    ema_decay: float = 0.999
    latent_samples: int = 30_000  # world samples encoded once for the base stage
    # the whole recipe, ControlNets included: 175 × (0.165 + 0.213 + 4 × 0.154) = 174 min of stage time; the
    # autoencoder and U-Net keep the 120-minute recipe's ~29 and ~37 min, each ControlNet ~27 (was 16.8)
    budget_minutes: float = 175.0
    # small autoencoder batches: more updates per second of CPU beat bigger batches (measured)
    vae: StageConfig = field(default_factory=lambda: StageConfig(8, 1e-3, 30_000, 0.165))
    base: StageConfig = field(default_factory=lambda: StageConfig(64, 6e-4, 40_000, 0.213, warmup_steps=200))
    # one ControlNet per condition, trained by `controlnet train`; budget_share is per ControlNet
    controlnet: StageConfig = field(default_factory=lambda: StageConfig(32, 1e-3, 40_000, 0.154, warmup_steps=0))
    controlnet_conditions: tuple[str, ...] = ("edges", "seg", "depth", "inpaint")
    controlnet_samples: int = 8000
    sample_steps: int = 20  # denoising steps of the sample grids and of the build's adherence check

    @classmethod
    def tiny(cls) -> MiniConfig:
        """Seconds-long settings for tests and CI: same code paths, toy sizes."""
        return cls(vae_channels=(8, 8, 16, 16), vae_norm_groups=4, unet_channels=(16, 16, 32), unet_norm_groups=8,
                   attention_heads=2, text_hidden=32, text_layers=1, text_heads=2, latent_samples=64,
                   vae=StageConfig(4, 1e-3, 3, 1.0, warmup_steps=1),
                   base=StageConfig(4, 1e-3, 3, 1.0, warmup_steps=1),
                   controlnet=StageConfig(4, 1e-3, 4, 1.0, warmup_steps=0), controlnet_samples=16, sample_steps=2)

    def check(self) -> MiniConfig:
        """Refuse settings a user can give that would fail or hang a stage, before any stage runs."""
        checks.number("budget_minutes", self.budget_minutes, lo=0.0, lo_open=True)
        checks.integer("world_seed", self.world_seed, lo=0)
        return self

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> MiniConfig:
        """Read a recipe.json; a damaged one is an InputError naming the file."""

        def build(d: dict) -> MiniConfig:
            for key in ("vae_channels", "unet_channels"):
                d[key] = tuple(d[key])
            d["vae"], d["base"] = StageConfig(**d["vae"]), StageConfig(**d["base"])
            if "controlnet" in d:  # recipes written before the ControlNet stage keep its defaults
                d["controlnet"] = StageConfig(**d["controlnet"])
                d["controlnet_conditions"] = tuple(d["controlnet_conditions"])
            return cls(**d)

        return read_recipe(path, build)


def read_recipe(path: str | Path, build: Callable[[dict], object]):
    """A recipe.json made into its checked config by `build`; a damaged one is an InputError naming the file."""
    try:
        return build(json.loads(Path(path).read_text())).check()
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, InputError) as exc:
        raise InputError(f"{path} is not a readable build recipe ({exc}); delete it to start the build "
                         f"afresh, or build in another folder") from None


def start_build(out: Path, config, recipe_class, threads: int | None):
    """Check the inputs and the build folder before any stage runs, then fix the recipe in OUT/recipe.json
    (a resumed build keeps its own; other settings are refused), the thread count and the seed."""
    import torch

    if threads is not None:
        threads = checks.positive_int("threads", threads)
    if config is not None:
        config.check()
    writable_folder(out, "build folder")
    recipe = out / "recipe.json"
    if recipe.exists():
        stored = recipe_class.load(recipe)
        if config is not None and config != stored:
            raise InputError(f"{out} holds a build with other settings ({recipe}); resume it with the same "
                             f"options or start in an empty folder")
        config = stored
    config = config or recipe_class()
    config.save(recipe)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.world_seed)
    return config
