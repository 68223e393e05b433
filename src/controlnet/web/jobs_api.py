"""Job ids, which the A1111 API lacks: submit with POST /jobs/{txt2img|img2img|detect} (same bodies),
follow with GET /jobs/{id} (state, progress, then the result), stop one with POST /jobs/{id}/interrupt.
Concurrent clients can tell their jobs apart; the page works this way."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from controlnet.web.guard import user_of
from controlnet.web.service import BadRequest

router = APIRouter()
KINDS = ("txt2img", "img2img", "detect")


def _job(request: Request, job_id: str):
    job = request.app.state.service.queue.get(job_id, owner=user_of(request))
    if job is None:
        raise BadRequest(404, f"no job {job_id!r} (finished jobs are kept for a while, the latest ones only)", "job_id")
    return job


@router.post("/jobs/{kind}")
async def submit(kind: str, request: Request):
    service = request.app.state.service
    if kind not in KINDS:
        raise BadRequest(404, f"unknown job kind {kind!r}; use {', '.join(KINDS)}", "kind")
    req = service.parse(kind, await service.body(request))
    job = service.submit(kind, req, polled=True, owner=user_of(request))
    return JSONResponse(service.job_status(job), status_code=202, headers={"Location": f"/jobs/{job.id}"})


@router.get("/jobs/{job_id}")
async def status(job_id: str, request: Request):
    return request.app.state.service.job_status(_job(request, job_id))


@router.post("/jobs/{job_id}/interrupt")
async def interrupt(job_id: str, request: Request):
    service = request.app.state.service
    job = _job(request, job_id)
    service.queue.interrupt(job)
    return service.job_status(job)
