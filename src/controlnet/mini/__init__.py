"""The miniature Stable Diffusion: SD's classes at toy size, trained from scratch on the world.

    controlnet world build-mini outputs/mini          # every stage, resumable
    from controlnet.mini import load
    pipe = load("outputs/mini/model")                 # a diffusers StableDiffusionPipeline

Exports are lazy (`controlnet._lazy`): `controlnet demo` imports `controlnet.mini.demo` without
paying for the training stages and diffusers' pipeline classes.
"""

from controlnet._lazy import lazy_exports

_EXPORTS = {
    "adherence": "controlnet.metrics.adherence",
    "colour_check": "controlnet.metrics.adherence",
    "build_mini": "controlnet.mini.build",
    "MiniConfig": "controlnet.mini.config",
    "StageConfig": "controlnet.mini.config",
    "assemble": "controlnet.mini.pipeline",
    "load": "controlnet.mini.pipeline",
    "save": "controlnet.mini.pipeline",
    "build_tokenizer": "controlnet.mini.tokenizer",
}
__all__ = ["MiniConfig", "StageConfig", "adherence", "assemble", "build_mini", "build_tokenizer", "colour_check",
           "load", "save"]
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
