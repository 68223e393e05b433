"""The AUTOMATIC1111 routes with the sd-webui-controlnet extension's, as existing clients call them
(`webuiapi`, editor plugins): /sdapi/v1/* and /controlnet/*."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from controlnet.web import modules
from controlnet.web.guard import user_of
from controlnet.web.schema import SAMPLERS
from controlnet.web.service import BadRequest

router = APIRouter()
CONTROLNET_API_VERSION = 3


def _service(request: Request):
    return request.app.state.service


async def _generate(kind: str, request: Request) -> JSONResponse:
    service = _service(request)
    req = service.parse(kind, await service.body(request))
    job = service.submit(kind, req, owner=user_of(request))
    result = await service.wait(job, request)
    return JSONResponse(result, headers={"X-Job-Id": job.id})


@router.post("/sdapi/v1/txt2img")
async def txt2img(request: Request):
    return await _generate("txt2img", request)


@router.post("/sdapi/v1/img2img")
async def img2img(request: Request):
    return await _generate("img2img", request)


@router.get("/sdapi/v1/progress")
async def progress(request: Request):
    """A1111's progress of the running job when it is the caller's (another user's job shows as
    idle); state.job is its id (GET /jobs/{id} for a given one)."""
    queue = _service(request).queue
    job = queue.current
    if job is None or job.owner != user_of(request):
        return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                "state": {"skipped": False, "interrupted": False, "job": "", "job_count": queue.waiting,
                          "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}
    elapsed = time.time() - (job.started or time.time())
    eta = elapsed / job.progress - elapsed if job.progress > 0 else 0.0
    return {"progress": job.progress, "eta_relative": eta, "current_image": None, "textinfo": None,
            "state": {"skipped": False, "interrupted": job.stop.is_set(), "job": job.id, "job_count": queue.waiting + 1,
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)), "job_no": 0,
                      "sampling_step": job.step, "sampling_steps": job.total}}


@router.post("/sdapi/v1/interrupt")
@router.post("/sdapi/v1/skip")
async def interrupt(request: Request):
    """Stops the running job only, and only when it is the caller's (queued jobs go on); it answers
    with the images reached so far."""
    job = _service(request).queue.interrupt_current(owner=user_of(request))
    return {"interrupted": job.id if job else None}


@router.get("/sdapi/v1/sd-models")
async def sd_models(request: Request):
    service = _service(request)
    engine = service.engine
    return [{"title": service.model_title, "model_name": engine.model_name, "hash": engine.model_hash,
             "sha256": None, "filename": engine.model_path.name, "config": None}]  # a name: the server's paths stay private


@router.get("/sdapi/v1/samplers")
async def samplers():
    return [{"name": name, "aliases": [ours], "options": {}} for name, ours in SAMPLERS.items()]


@router.get("/sdapi/v1/schedulers")
async def schedulers():
    return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model": False},
            {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": False}]


@router.get("/sdapi/v1/scripts")
async def scripts():
    """No selectable script runs here (script_name is refused), so none is listed. (webuiapi reads
    "controlnet m2m" here only to send an empty ControlNet unit list when it has no units.)"""
    return {"txt2img": [], "img2img": []}


@router.get("/sdapi/v1/options")
async def get_options(request: Request):
    service = _service(request)
    return {"sd_model_checkpoint": service.model_title, "control_net_unit_count": service.limits.units,
            "samples_format": "png", "control_net_no_detectmap": False}


@router.post("/sdapi/v1/options")
async def set_options(request: Request):
    """Options cannot be changed on this server: switching to another model is refused, the other
    options are not applied, which the answer says ({"warnings": [...]}; A1111 answers null)."""
    service = _service(request)
    body = await service.body(request)
    if not isinstance(body, dict):
        raise BadRequest(422, "options must be a JSON object", "body")
    wanted = body.get("sd_model_checkpoint")
    if wanted is not None and str(wanted).split(" [")[0] != service.engine.model_name:
        raise BadRequest(422, f"sd_model_checkpoint: this server serves {service.model_title} only (--model)", "sd_model_checkpoint")
    ignored = [key for key in body if key != "sd_model_checkpoint"]
    return {"warnings": [f"{key!a}: not applied (options cannot be changed on this server)" for key in ignored]} if ignored else None


@router.get("/controlnet/version")
async def version():
    return {"version": CONTROLNET_API_VERSION}


@router.get("/controlnet/model_list")
async def model_list(request: Request):
    return {"model_list": _service(request).engine.controlnet_titles()}


@router.get("/controlnet/module_list")
async def module_list(request: Request):
    return modules.module_list(_service(request).engine.annotator_dir)


@router.get("/controlnet/control_types")
async def control_types(request: Request):
    """sd-webui-controlnet's Control Type filter: each type's preprocessors and models, with defaults."""
    engine = _service(request).engine
    return modules.control_types(engine.controlnet_titles(), engine.annotator_dir, engine.union_titles())


@router.get("/controlnet/settings")
async def settings(request: Request):
    return {"control_net_unit_count": _service(request).limits.units}


@router.post("/controlnet/detect")
async def detect(request: Request):
    service = _service(request)
    req = service.parse("detect", await service.body(request))
    job = service.submit("detect", req, owner=user_of(request))
    result = await service.wait(job, request)
    return JSONResponse(result, headers={"X-Job-Id": job.id})
