"""The generated world: reproducible, captions true to the picture, condition maps exact."""

from __future__ import annotations

import numpy as np
import pytest

from controlnet.world import (
    COLOURS,
    CONDITIONS,
    SEG_COLOURS,
    World,
    caption,
    nearest_colour,
    render,
)
from controlnet.world.palette import texture_tint

N = 60


@pytest.fixture(scope="module")
def samples():
    return list(World(seed=7, size=64).take(N))


def test_same_seed_same_samples_any_order():
    a, b = World(seed=3), World(seed=3)
    for i in (5, 0, 11):
        sa, sb = a[i], b[i]
        assert sa.caption == sb.caption
        assert np.array_equal(sa.image, sb.image)
        for kind in CONDITIONS:
            assert np.array_equal(sa.conditions[kind], sb.conditions[kind])


def test_different_seeds_differ():
    assert [s.caption for s in World(seed=1).take(5)] != [s.caption for s in World(seed=2).take(5)]


def test_scene_renders_alike_at_any_size():
    scene = World(seed=4).scene(2)
    small, _, _ = render(scene, 64, ())
    big, _, _ = render(scene, 256, ())
    down = big.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.mean(np.abs(down - small.astype(float)) > 40) < 0.05


def test_shape_counts_cover_one_to_three():
    counts = {len(World(seed=0).scene(i).shapes) for i in range(100)}
    assert counts == {1, 2, 3}


def test_caption_names_every_shape_and_the_background(samples):
    for s in samples:
        text = s.caption
        for shape in s.scene.shapes:
            assert f"{shape.colour} {shape.kind}" in text
        assert text.endswith(f"{s.scene.background} background")
        assert text.count(" and ") == (len(s.scene.shapes) > 1)
    assert caption(samples[0].scene) == samples[0].caption


def test_picture_has_the_named_colours_where_the_shapes_are(samples):
    for s in samples:
        truth = s.truth()
        for k, shape in enumerate(truth["shapes"]):
            pixels = s.image[s.labels == k + 1]
            assert len(pixels) > 0, "every shape stays visible"
            assert shape["visible_fraction"] >= 0.4
            assert (pixels == shape["rgb"]).all()
            x0, y0, x1, y1 = shape["box"]
            ys, xs = np.nonzero(s.labels == k + 1)
            assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
        background = s.image[s.labels == 0]
        assert set(nearest_colour(background)) == {truth["background"]["colour"]}


def test_texture_tint_keeps_the_colour_name():
    for name, rgb in COLOURS.items():
        assert nearest_colour(texture_tint(rgb)) == name


def test_edges_are_one_pixel_outlines_on_shape_boundaries(samples):
    for s in samples:
        edges = s.conditions["edges"]
        assert set(np.unique(edges)) <= {0, 255}
        assert (edges[..., 0] == edges[..., 2]).all()
        on = edges[..., 0] > 0
        labels = s.labels
        pad = np.pad(labels, 1, mode="edge")
        neighbours = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])
        boundary = (neighbours != labels).any(0)
        assert (labels[on] > 0).all(), "edges sit on the shape side of a boundary"
        assert boundary[on].all(), "every edge pixel touches another region"
        for k in range(len(s.scene.shapes)):
            assert on[labels == k + 1].any(), "every visible shape has an outline"
        # 1-px: no 2×2 block of edge pixels inside one shape's interior boundary run
        inner = on & ~boundary
        assert not inner.any()


def test_segmentation_uses_the_fixed_palette(samples):
    for s in samples:
        seg = s.conditions["seg"]
        assert (seg[s.labels == 0] == SEG_COLOURS["background"]).all()
        for k, shape in enumerate(s.scene.shapes):
            assert (seg[s.labels == k + 1] == SEG_COLOURS[shape.kind]).all()


def test_depth_follows_draw_order(samples):
    for s in samples:
        depth = s.conditions["depth"][..., 0]
        assert (depth[s.labels == 0] == 0).all()
        values = [int(depth[s.labels == k + 1][0]) for k in range(len(s.scene.shapes))]
        assert values[-1] == 255, "the nearest (last drawn) shape is brightest"
        assert values == sorted(values) and len(set(values)) == len(values)


def test_scribble_and_outline_trace_the_shapes(samples):
    import cv2

    for s in samples:
        near = cv2.dilate((s.labels > 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        for kind in ("scribble", "outline"):
            m = s.conditions[kind][..., 0] > 127
            assert m.any()
            assert near[m].mean() > 0.95, f"{kind} strokes stay around the shapes"
        assert (s.conditions["scribble"][..., 0] > 127).sum() > (s.conditions["outline"][..., 0] > 127).sum()


def test_canny_sees_shape_boundaries():
    s = World(seed=1, min_shapes=1, max_shapes=1)[0]
    on = s.conditions["canny"][..., 0] > 0
    near = np.zeros_like(on)
    edges = s.conditions["edges"][..., 0] > 0
    import cv2

    near = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert on.any() and (on & near).sum() > 0.5 * edges.sum()


def test_truth_is_json_serialisable(samples):
    import json

    d = json.loads(json.dumps(samples[0].truth()))
    assert d["caption"] == samples[0].caption
    assert [sh["draw_order"] for sh in d["shapes"]] == list(range(len(samples[0].scene.shapes)))


def test_batch_stacks_samples():
    images, captions, maps = World(seed=0, conditions=("edges", "depth")).batch(range(4))
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert len(captions) == 4 and set(maps) == {"edges", "depth"} and maps["edges"].shape == (4, 64, 64, 3)


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        World(min_shapes=3, max_shapes=1)
    with pytest.raises(ValueError):
        render(World().scene(0), 64, ("normals",))
