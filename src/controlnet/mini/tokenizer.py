"""The miniature model's tokenizer: CLIP's byte alphabet plus one token per word of the world."""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer

from controlnet.offline_tokenizer import offline_clip_tokenizer
from controlnet.world.caption import vocabulary


def build_tokenizer(folder: str | Path, max_length: int = 32) -> CLIPTokenizer:
    return offline_clip_tokenizer(folder, max_length, vocabulary())
