"""The miniature Stable Diffusion: SD's classes at toy size, trained from scratch on the world.

    controlnet world build-mini outputs/mini          # every stage, resumable
    from controlnet.mini import load
    pipe = load("outputs/mini/model")                 # a diffusers StableDiffusionPipeline
"""

from controlnet.metrics.adherence import adherence, colour_check
from controlnet.mini.build import build_mini
from controlnet.mini.config import MiniConfig, StageConfig
from controlnet.mini.pipeline import assemble, load, save
from controlnet.mini.tokenizer import build_tokenizer

__all__ = ["MiniConfig", "StageConfig", "adherence", "assemble", "build_mini", "build_tokenizer", "colour_check",
           "load", "save"]
