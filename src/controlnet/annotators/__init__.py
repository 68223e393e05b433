"""Annotators: from a photo to the condition map each published ControlNet expects.

    from controlnet.annotators import annotate, list_annotators
    edges = annotate("canny", photo, resolution=512, low_threshold=100, high_threshold=200)

Classical annotators are exact re-implementations of the reference formulas; learned ones run from
local files only (transformers folders, published .pth files) or from mediapipe's bundled models.
"""

# importing the modules registers their annotators
from . import (  # noqa: F401
    anyline,
    depth,
    depth_anything_v2,
    dwpose,
    edges,
    hed,
    image_hints,
    inpaint,
    leres,
    lineart,
    lineart_anime,
    lines,
    manga_line,
    mediapipe_face,
    midas,
    normal,
    normal_bae,
    openpose_modules,
    pidinet,
    pose,
    segmentation,
    shuffle,
    teed,
    threshold,
    zoe,
)
from .api import annotate
from .image import fit_map, load_image, pixel_perfect_resolution, resize_short_side, to_rgb
from .inpaint import map_to_hint
from .registry import REGISTRY, Annotator, Param, get_annotator, list_annotators

__all__ = [
    "REGISTRY",
    "Annotator",
    "Param",
    "annotate",
    "fit_map",
    "get_annotator",
    "list_annotators",
    "load_image",
    "map_to_hint",
    "pixel_perfect_resolution",
    "resize_short_side",
    "to_rgb",
]
