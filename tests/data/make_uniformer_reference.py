"""How tests/data/uniformer_reference.npz was made: sd-webui-controlnet's own UniFormer code on random weights.

controlnet_aux 0.0.10 has no UniFormer detector, so the reference is the code A1111 runs for
`seg_ufade20k`: sd-webui-controlnet's annotator/uniformer (its upernet_global_small.py config,
uniformer.py backbone, inference.py) over its vendored mmcv / mmseg (annotator/mmpkg), at commit
56cec5b2 of github.com/Mikubill/sd-webui-controlnet. Run OUTSIDE the project:

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1 controlnet-aux==0.0.10 addict yapf
    git -C sd-webui-controlnet archive HEAD annotator | tar -x -C /tmp/sdwebui
    /tmp/auxenv/bin/python tests/data/make_uniformer_reference.py /tmp/sdwebui

Shims, here only: annotator/uniformer/__init__.py imports A1111's `modules.devices` and the
extension's models path, so two empty stand-in modules take their place; nothing of the network,
its config or its pipeline is changed. The config is reduced (uniformer_inputs.REDUCED: widths,
depths, head channels; 64-channel attention heads as published); the seeded random tensors of
uniformer_inputs are saved as the published file is laid out (an mmcv checkpoint: meta + state_dict)
and loaded by the extension's `init_segmentor`. Each picture goes through A1111's processor steps
(`resize_image_with_pad` at resolution = its short side, `apply_uniformer`'s inference_segmentor and
show_result_pyplot with the ADE palette at opacity 1, then the pad removed). Stored: seeds, sizes,
the colour maps, the label maps, and a strided subset (uniformer_inputs.LOGIT_SAMPLE) of the decode
head's raw logits for the ≤ 1e-5 check.
"""

import sys
import tempfile
import types
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pidinet_inputs import picture  # noqa: E402
from uniformer_inputs import (  # noqa: E402
    LOGIT_SAMPLE,
    PICTURE_SEEDS,
    PICTURE_SIZES,
    REDUCED,
    WEIGHT_SEED,
    published_layout,
    random_uniformer_state,
)


def reference_package(src):
    """sd-webui-controlnet's uniformer code from `src` (the folder above its annotator/), behind the two shims:
    (mmcv, build_segmentor, init_segmentor, inference_segmentor, show_result_pyplot, get_palette, the config path)."""
    sys.path.insert(0, str(src))
    modules = types.ModuleType("modules")
    modules.devices = types.ModuleType("modules.devices")
    annotator_path = types.ModuleType("annotator.annotator_path")
    annotator_path.models_path = tempfile.gettempdir()
    sys.modules.update({"modules": modules, "modules.devices": modules.devices, "annotator.annotator_path": annotator_path})
    import annotator.mmpkg.mmcv as mmcv
    from annotator.mmpkg.mmseg.core.evaluation import get_palette
    from annotator.mmpkg.mmseg.models import build_segmentor
    from annotator.uniformer import inference

    config = Path(inference.__file__).parent / "upernet_global_small.py"
    return (mmcv, build_segmentor, inference.init_segmentor, inference.inference_segmentor,
            inference.show_result_pyplot, get_palette, config)


def reduced_config(mmcv, config):
    cfg = mmcv.Config.fromfile(str(config))
    cfg.model.backbone.embed_dim = list(REDUCED["dims"])
    cfg.model.backbone.layers = list(REDUCED["depths"])
    cfg.model.decode_head.in_channels = list(REDUCED["dims"])
    cfg.model.decode_head.channels = REDUCED["channels"]
    cfg.model.auxiliary_head.in_channels = REDUCED["dims"][2]
    cfg.model.auxiliary_head.channels = REDUCED["aux_channels"]
    return cfg


def resize_image_with_pad(img, resolution):
    """sd-webui-controlnet scripts/utils.py, as written there."""
    h_raw, w_raw, _ = img.shape
    k = float(resolution) / float(min(h_raw, w_raw))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    h_target, w_target = int(np.round(float(h_raw) * k)), int(np.round(float(w_raw) * k))
    img = cv2.resize(img, (w_target, h_target), interpolation=interpolation)
    h_pad = int(np.ceil(float(h_target) / 64.0) * 64 - h_target)
    w_pad = int(np.ceil(float(w_target) / 64.0) * 64 - w_target)
    padded = np.pad(img, [[0, h_pad], [0, w_pad], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), lambda x: np.ascontiguousarray(x[:h_target, :w_target].copy())


def main(src):
    mmcv, build_segmentor, init_segmentor, inference_segmentor, show_result_pyplot, get_palette, config = \
        reference_package(src)
    cfg = reduced_config(mmcv, config)
    shapes = {k: tuple(v.shape) for k, v in build_segmentor(cfg.model).state_dict().items()}
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upernet_global_small.pth"
        torch.save(published_layout(random_uniformer_state(shapes, WEIGHT_SEED)), path)
        model = init_segmentor(cfg, str(path), device="cpu")
    captured = []
    model.decode_head.conv_seg.register_forward_hook(lambda _m, _i, output: captured.append(output))
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        padded, remove_pad = resize_image_with_pad(image, min(size))
        captured.clear()
        result = inference_segmentor(model, padded)
        drawn = show_result_pyplot(model, padded, result, get_palette("ade"), opacity=1)
        out[f"seg_ufade20k_{i}"] = remove_pad(drawn)
        out[f"labels_{i}"] = remove_pad(result[0]).astype(np.uint8)
        out[f"logits_{i}"] = captured[0][LOGIT_SAMPLE].numpy().astype(np.float32)
        out[f"logits_shape_{i}"] = np.array(captured[0].shape)
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "uniformer_reference.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sdwebui")
