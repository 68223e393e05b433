"""A1111's segmentation modules (seg_ofade20k, seg_ofcoco, seg_ufade20k) from local transformers folders
(seg_ufade20k from A1111's own upernet_global_small.pth: test_annotators_uniformer.py).

The reference is transformers' own OneFormer / UperNet run straight on tiny random models saved to a
temp folder (there is no detectron2 or mmseg here): raw outputs within 1e-5, label maps equal, at the
size the A1111 pipeline scales to (detectron2's ResizeShortestEdge, mmcv's keep-ratio rescale, written
out below as those libraries compute them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from controlnet.annotators import annotate
from controlnet.annotators.ade20k import ADE20K_PALETTE
from controlnet.annotators.coco_panoptic import COCO_PANOPTIC_PALETTE
from controlnet.annotators.segmentation import network_outputs, network_size
from controlnet.errors import InputError, MissingFileError
from detector_device import assert_runs_on_the_network_device
from test_annotators_learned import save_upernet

# three photos of different shapes, cut small so the tiny networks run fast
PHOTOS = [np.ascontiguousarray(data.astronaut()[::6, ::6]), np.ascontiguousarray(data.coffee()[::5, ::5]),
          np.ascontiguousarray(data.rocket()[::6, ::6])]


def save_oneformer(folder, num_labels=150):
    """A tiny random OneFormer (Swin backbone) with its processor (image processor + offline CLIP tokenizer)."""
    from transformers import (
        OneFormerConfig,
        OneFormerForUniversalSegmentation,
        OneFormerProcessor,
        SwinConfig,
    )
    from transformers.models.oneformer.image_processing_pil_oneformer import OneFormerImageProcessorPil

    from controlnet.offline_tokenizer import offline_clip_tokenizer

    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=64,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = OneFormerConfig(
        backbone_config=backbone, num_labels=num_labels, id2label={i: f"c{i}" for i in range(num_labels)},
        num_queries=8, hidden_dim=32, conv_dim=32, mask_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, text_encoder_width=32, text_encoder_num_layers=1,
        text_encoder_context_length=16, task_seq_len=16, max_seq_len=16, text_encoder_n_ctx=4,
        text_encoder_vocab_size=600)
    OneFormerForUniversalSegmentation(config).save_pretrained(folder)
    images = OneFormerImageProcessorPil(size={"shortest_edge": 48, "longest_edge": 256}, num_text=4)
    OneFormerProcessor(images, offline_clip_tokenizer(folder, 16), max_seq_length=16, task_seq_length=16).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ade_folder(tmp_path_factory):
    return save_oneformer(tmp_path_factory.mktemp("of") / "seg_ofade20k")


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    return save_oneformer(tmp_path_factory.mktemp("of") / "seg_ofcoco", num_labels=133)


@pytest.fixture(scope="module")
def upernet_folder(tmp_path_factory):
    return save_upernet(tmp_path_factory.mktemp("un") / "seg_ufade20k")


def detectron2_resize_shortest_edge(h, w, short, max_size):
    """detectron2's ResizeShortestEdge.get_output_shape, as written there."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def mmcv_rescale(h, w, scale=(2048, 512)):
    """mmcv.rescale_size with keep_ratio (mmseg's test Resize, img_scale=(2048, 512))."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * float(factor) + 0.5), int(w * float(factor) + 0.5)


def test_network_size_follows_detectron2_and_mmcv():
    sizes = [(512, 768), (768, 512), (512, 512), (100, 2000), (333, 517), (201, 99), (640, 2561)]
    for h, w in sizes:
        assert network_size(h, w, 640, 2560) == detectron2_resize_shortest_edge(h, w, 640, 2560)
        assert network_size(h, w, 800, 1333) == detectron2_resize_shortest_edge(h, w, 800, 1333)
        assert network_size(h, w, 512, 2048) == mmcv_rescale(h, w)
    assert network_size(512, 768, 640, 2560) == (640, 960)  # A1111's 512-px detect map runs at short side 640
    assert network_size(100, 2000, 800, 1333) == (67, 1333)  # the long side caps it


def reference_oneformer(folder, image, size):
    """transformers' OneFormer straight: processor at the given (height, width) (None: its own size), task semantic,
    its post-processing."""
    from transformers import OneFormerForUniversalSegmentation, OneFormerProcessor

    model = OneFormerForUniversalSegmentation.from_pretrained(folder).eval()
    processor = OneFormerProcessor.from_pretrained(folder, backend="pil")
    sized = {} if size is None else {"size": {"height": size[0], "width": size[1]}}
    inputs = processor(images=image, task_inputs=["semantic"], return_tensors="pt", **sized)
    with torch.no_grad():
        out = model(**inputs)
    labels = processor.post_process_semantic_segmentation(out, target_sizes=[image.shape[:2]])[0].numpy()
    return out, labels


@pytest.mark.parametrize("photo", range(3))  # (tiny random OneFormers' queries collapse: one class per photo)
def test_oneformer_equals_transformers_at_a1111_size(ade_folder, photo):
    image = PHOTOS[photo]
    h, w = image.shape[:2]
    size = detectron2_resize_shortest_edge(h, w, 640, 2560)
    ref, ref_labels = reference_oneformer(ade_folder, image, size)
    out, _ = network_outputs(image, ade_folder, (640, 2560))
    assert out.masks_queries_logits.shape[-2:] == ref.masks_queries_logits.shape[-2:] == ((size[0] + 3) // 4, (size[1] + 3) // 4)
    assert torch.allclose(out.class_queries_logits, ref.class_queries_logits, atol=1e-5, rtol=0)
    assert torch.allclose(out.masks_queries_logits, ref.masks_queries_logits, atol=1e-5, rtol=0)
    drawn = annotate("seg_ofade20k", image, resolution=min(h, w), model=ade_folder)  # detect size = image size
    assert np.array_equal(drawn, ADE20K_PALETTE[ref_labels]), "labels equal, drawn in the ADE20K palette"


def test_oneformer_coco_draws_the_coco_panoptic_palette(coco_folder):
    image = PHOTOS[1]
    h, w = image.shape[:2]
    _, labels = reference_oneformer(coco_folder, image, detectron2_resize_shortest_edge(h, w, 800, 1333))
    drawn = annotate("seg_ofcoco", image, resolution=min(h, w), model=coco_folder)
    assert np.array_equal(drawn, COCO_PANOPTIC_PALETTE[labels])
    assert tuple(COCO_PANOPTIC_PALETTE[0]) == (220, 20, 60) and tuple(COCO_PANOPTIC_PALETTE[132]) == (250, 141, 255)
    assert tuple(COCO_PANOPTIC_PALETTE[80]) == (255, 255, 128)  # banner: the first stuff class after 80 things


def test_segmentation_maps_are_resized_nearest(ade_folder):
    """A1111 resizes the detected map to the output with INTER_NEAREST: only palette colours remain."""
    out = annotate("seg_ofade20k", PHOTOS[0], resolution=48, width=203, height=117, model=ade_folder)
    assert out.shape == (117, 203, 3)
    assert {tuple(c) for c in np.unique(out.reshape(-1, 3), axis=0)} <= {tuple(c) for c in ADE20K_PALETTE}


def test_seg_ade20k_runs_a_oneformer_folder_at_its_processor_size(ade_folder):
    image = PHOTOS[1]
    h, w = image.shape[:2]
    _, labels = reference_oneformer(ade_folder, image, None)
    assert np.array_equal(annotate("seg_ade20k", image, resolution=min(h, w), model=ade_folder), ADE20K_PALETTE[labels])


def test_upernet_equals_transformers_at_mmseg_size(upernet_folder):
    from transformers import AutoImageProcessor, UperNetForSemanticSegmentation

    image = PHOTOS[2]
    h, w = image.shape[:2]
    size = mmcv_rescale(h, w)
    model = UperNetForSemanticSegmentation.from_pretrained(upernet_folder).eval()
    processor = AutoImageProcessor.from_pretrained(upernet_folder, backend="pil")
    with torch.no_grad():
        ref = model(**processor(images=image, size={"height": size[0], "width": size[1]}, return_tensors="pt")).logits
    out, _ = network_outputs(image, upernet_folder, (512, 2048))
    assert ref.shape[-2:] == size and torch.allclose(out.logits, ref, atol=1e-5, rtol=0)
    labels = torch.nn.functional.interpolate(ref, size=(h, w), mode="bilinear", align_corners=False).argmax(1)[0]
    drawn = annotate("seg_ufade20k", image, resolution=min(h, w), model=upernet_folder)
    assert np.array_equal(drawn, ADE20K_PALETTE[labels.numpy()])


def test_wrong_models_and_files_are_refused(tmp_path, ade_folder, coco_folder, upernet_folder):
    image = PHOTOS[0]
    with pytest.raises(InputError, match="holds a upernet model, not oneformer.*oneformer_ade20k_swin_large"):
        annotate("seg_ofade20k", image, resolution=48, model=upernet_folder)
    with pytest.raises(InputError, match="holds a oneformer model, not upernet"):
        annotate("seg_ufade20k", image, resolution=48, model=ade_folder)
    with pytest.raises(InputError, match="has 150 classes; this map needs the 133 COCO panoptic classes"):
        annotate("seg_ofcoco", image, resolution=48, model=ade_folder)
    with pytest.raises(InputError, match="has 133 classes; this map needs the 150 ADE20K classes"):
        annotate("seg_ofade20k", image, resolution=48, model=coco_folder)
    pth = tmp_path / "upernet_global_small.pth"  # read as A1111's UniFormer file (test_annotators_uniformer.py)
    pth.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"upernet_global_small\.pth (holds more than plain tensors|is not a)"):
        annotate("seg_ufade20k", image, resolution=48, model=pth)


def test_missing_folders_say_what_to_put_where(tmp_path, ade_folder):
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(MissingFileError) as caught:
        annotate("seg_ofade20k", PHOTOS[0], models_dir=models)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert "seg_ofade20k needs a transformers folder named seg_ofade20k: put it in " + str(models.resolve()) in message
    assert "shi-labs/oneformer_ade20k_swin_large" in message and "250_16_swin_l_oneformer_ade20k_160k.pth" in message
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors", "processor_config.json"):
        (no_tokenizer / name).write_bytes((ade_folder / name).read_bytes())
    with pytest.raises(MissingFileError, match="tokenizer files .vocab.json, merges.txt."):
        annotate("seg_ofade20k", PHOTOS[0], resolution=48, model=no_tokenizer)


def test_found_in_the_models_folder_and_offered_by_the_server(ade_folder):
    from controlnet.web import modules

    models = ade_folder.parent  # holds seg_ofade20k/ only
    listed = modules.module_list(models)["module_list"]
    assert "seg_ofade20k" in listed and not {"seg_ofcoco", "seg_ufade20k", "seg_ade20k"} & set(listed)
    image = PHOTOS[1]
    assert np.array_equal(annotate("seg_ofade20k", image, resolution=48, models_dir=models),
                          annotate("seg_ofade20k", image, resolution=48, model=ade_folder))


def test_runs_on_its_networks_device_oneformer(ade_folder):
    assert_runs_on_the_network_device("seg_ofade20k", model=ade_folder)


def test_runs_on_its_networks_device_upernet(upernet_folder):
    assert_runs_on_the_network_device("seg_ufade20k", model=upernet_folder)
