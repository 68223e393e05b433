"""Training a ControlNet (paper §3.3): data, the recipe, the loop, checkpoints, validation.

    from controlnet.training import TrainConfig, train
    train(TrainConfig(base_model="sd15/", data=["fill50k/"], output_dir="out", max_steps=5000))

Names load on first use, so the CLI can read `TrainConfig` without importing torch.
"""

from controlnet._lazy import lazy_exports

_MODULES = {
    "base": ["Base", "build_base", "load_base", "make_tiny_base", "model_hash", "save_base"],
    "cache": ["FeatureCache"],
    "config": ["TrainConfig"],
    "data": ["BadSample", "Fill50k", "GlobalBatches", "HFDataset", "ImageFolder", "PairDataset", "Processing",
             "WebDatasetPairs", "collate", "detect_format", "open_sources"],
    "denoiser": ["ControlledDenoiser", "unet_decoder", "unet_encoder"],
    "loop": ["TrainingDiverged", "TrainResult", "train"],
    "toy": ["make_fill50k"],
}
_LAZY = {name: f"controlnet.training.{module}" for module, names in _MODULES.items() for name in names}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
