"""The miniature world: seeded pictures of coloured shapes with captions and exact condition maps.

    from controlnet.world import World
    sample = World(seed=0, size=64)[7]
    sample.image, sample.caption, sample.conditions["edges"], sample.truth()
"""

from controlnet.world.caption import caption, vocabulary
from controlnet.world.export import LAYOUTS, export, read_export
from controlnet.world.grid import image_grid, save_grid, save_world_grid
from controlnet.world.palette import COLOURS, SEG_COLOURS, SHAPE_KINDS, TEXTURES, nearest_colour
from controlnet.world.render import CONDITIONS, depth_levels, render
from controlnet.world.scene import Scene, Shape, sample_scene
from controlnet.world.world import Sample, World

__all__ = [
    "CONDITIONS", "COLOURS", "LAYOUTS", "SEG_COLOURS", "SHAPE_KINDS", "TEXTURES", "Sample", "Scene", "Shape",
    "World", "caption", "depth_levels", "export", "image_grid", "nearest_colour", "read_export", "render",
    "sample_scene", "save_grid", "save_world_grid", "vocabulary",
]
