"""Outputs as clients want them: base64 PNGs (each generated image carries its parameters in the
format of `controlnet generate`, so a download keeps them) and A1111's `{images, parameters, info}`."""

from __future__ import annotations

import base64
import io
import json
import time

from controlnet.web.engine import Generated
from controlnet.web.schema import GenerationRequest


def png_b64(image, params: dict | None = None) -> str:
    """Raw base64 (no data: prefix: A1111 clients decode it as is) of a PNG, with parameters when given."""
    from PIL import Image

    from controlnet.parameters import png_info

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    info = None if params is None else png_info(params)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode()


def info(req: GenerationRequest, out: Generated, job_id: str, model_title: str) -> dict:
    """A1111's `Processed.js()` fields (what clients read), plus job_id, interrupted and warnings."""
    import controlnet
    from controlnet.parameters import a1111_line, unit_infotext

    n = len(out.images)
    return {
        "prompt": req.prompt, "all_prompts": [req.prompt] * n, "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * n, "seed": out.seeds[0] if out.seeds else req.seed,
        "all_seeds": out.seeds, "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0, "width": req.width,
        "height": req.height, "sampler_name": req.sampler_label, "cfg_scale": req.cfg, "steps": req.steps,
        "batch_size": req.batch_size, "n_iter": req.n_iter, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": model_title.split(" [")[0], "sd_model_hash": model_title.split("[")[-1].rstrip("]"),
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": req.strength if req.kind == "img2img" else None,
        "extra_generation_params": {f"ControlNet {u['index']}": unit_infotext(u, u["resize"])
                                    for u in (out.params[0]["units"] if out.params else [])},
        "index_of_first_image": 0, "infotexts": [a1111_line(p) for p in out.params], "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": 1, "is_using_inpainting_conditioning": False,
        "version": controlnet.__version__, "job_id": job_id, "interrupted": out.interrupted,
        "detected_maps": len(out.maps), "warnings": out.warnings,
        "recommended": req.recommended,  # the values the request left out, taken from the ControlNets' recommended.json
    }


def generation_response(req: GenerationRequest, out: Generated, job_id: str, model_title: str) -> dict:
    """{images: outputs then each active unit's detected map, parameters: the request, info: JSON text}."""
    images = [png_b64(im, p) for im, p in zip(out.images, out.params)] + [png_b64(m) for m in out.maps]
    return {"images": images, "parameters": req.echo, "info": json.dumps(info(req, out, job_id, model_title))}


def detect_response(maps: list, warnings: list[str], poses: list | None = None) -> dict:
    """A1111's answer; `poses` (the OpenPose JSON per image) only for the openpose modules, as A1111 does."""
    out = {"info": "Success", "images": [png_b64(m) for m in maps], "warnings": warnings}
    return out if poses is None else {**out, "poses": poses}
