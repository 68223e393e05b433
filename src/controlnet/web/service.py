"""What every route shares: the engine, the queue, the limits; reading a JSON body, submitting a
job and waiting for it while watching the connection, and turning errors into HTTP answers."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from controlnet.errors import ControlNetError, InputError
from controlnet.web import cost, guard, results, schema
from controlnet.web.guard import Limits
from controlnet.web.jobs import Closed, Job, JobQueue, QueueFull


class BadRequest(Exception):
    """An error with its HTTP status, raised by routes and turned into a JSON answer by the app."""

    def __init__(self, status: int, detail: str, field: str | None = None, headers: dict | None = None):
        self.status, self.detail, self.field, self.headers = status, detail, field, headers or {}
        super().__init__(detail)

    def response(self) -> JSONResponse:
        body = {"error": _ERROR_NAMES.get(self.status, "Error"), "detail": self.detail}
        if self.field:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)


_ERROR_NAMES = {403: "Forbidden", 404: "NotFound", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 422: "InputError", 500: "InternalError", 503: "ServiceUnavailable"}


def as_bad_request(exc: BaseException) -> BadRequest:
    """A user error (InputError, a FieldError naming its field) -> 422; anything else -> 500. The
    server's paths in a message are shortened to file names."""
    if isinstance(exc, BadRequest):
        return exc
    if isinstance(exc, (InputError, ControlNetError)):
        return BadRequest(422, guard.hide_paths(str(exc)), getattr(exc, "field", None))
    if isinstance(exc, MemoryError):
        return BadRequest(500, "out of memory (try a smaller size or batch)")
    return BadRequest(500, guard.hide_paths(f"internal error (a bug in controlnet): {type(exc).__name__}: {exc}"))


class Service:
    def __init__(self, engine, limits: Limits):
        self.engine, self.limits = engine, limits
        self.step_cost = limits.step_cost or engine.step_cost  # measured once per engine, at startup
        self.queue = JobQueue(self._run, size=limits.queue_size, keep=limits.keep_jobs, abandon_after=limits.abandon_after,
                              max_seconds=limits.max_job_seconds)

    @property
    def model_title(self) -> str:
        return f"{self.engine.model_name} [{self.engine.model_hash}]"

    def _run(self, job: Job, on_step):
        """In the worker thread: the job's work, and its answer encoded (PNGs with parameters)."""
        if job.kind == "detect":
            maps = self.engine.detect(job.request)
            return results.detect_response(maps, job.request.warnings, self.engine.detect_poses(job.request))
        out = self.engine.generate(job.request, on_step)
        return results.generation_response(job.request, out, job.id, self.model_title)

    async def body(self, request: Request):
        """The JSON body; only `Content-Type: application/json`, which no web page can send here
        cross-site without the browser asking first (a form or text/plain body is refused)."""
        content_type = request.headers.get("content-type")
        if not guard.is_json(content_type):
            raise BadRequest(415, f"Content-Type: send the body as JSON with Content-Type: application/json (got "
                                  f"{content_type or 'none'}; with curl: -H 'Content-Type: application/json')", "Content-Type")
        try:
            return guard.parse_json(await request.body())
        except InputError as exc:
            raise as_bad_request(exc) from None

    def parse(self, kind: str, body):
        try:
            if kind == "detect":
                return schema.parse_detect(body, self.limits, self.engine.annotator_dir)
            req = schema.parse_generation(kind, body, self.engine, self.limits)
            cost.admit(req, self.engine, self.step_cost, self.limits)
            return req
        except InputError as exc:
            raise as_bad_request(exc) from None

    def submit(self, kind: str, req, polled: bool = False, owner: str | None = None) -> Job:
        try:
            return self.queue.submit(kind, req, polled, total=getattr(req, "steps_run", 0) * getattr(req, "n_iter", 1),
                                     owner=owner)
        except Closed as exc:
            raise BadRequest(503, str(exc)) from None
        except QueueFull as exc:
            raise BadRequest(503, f"{exc} (the queue holds {self.limits.queue_size} jobs, --queue-size)",
                             headers={"Retry-After": str(exc.retry_after)}) from None

    async def wait(self, job: Job, request: Request) -> dict:
        """The job's answer; if the client disconnects first, the job is cancelled (queued: never
        starts; running: stops before its next network block)."""
        while not job.done.is_set():
            if await request.is_disconnected():
                self.queue.cancel(job, "the client disconnected")
                raise BadRequest(499, "client disconnected")
            await asyncio.sleep(0.02)
        if job.state == "failed":
            raise as_bad_request(job.error)
        if job.state == "cancelled":
            raise BadRequest(503 if self.queue.closing else 409, f"the job was cancelled: {job.cancelled}")
        return job.result

    def job_status(self, job: Job) -> dict:
        status = {"job_id": job.id, "kind": job.kind, "state": job.state, "progress": job.progress, "step": job.step,
                  "total": job.total, "queue_position": self.queue.position(job), "created": job.created,
                  "started": job.started, "finished": job.finished, "result": None, "error": None,
                  "cancelled": job.cancelled}
        if job.state in ("done", "interrupted"):
            status["result"] = job.result
        elif job.state == "failed":
            bad = as_bad_request(job.error)
            status["error"] = {"status": bad.status, "detail": bad.detail, "field": bad.field}
        return status
