"""`create_app`: the page, the A1111 API and /jobs in one ASGI app sharing one queue and worker."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.requests import Request

from controlnet.web import a1111, jobs_api, page
from controlnet.web.guard import BasicAuth, BodyLimit, CrossOrigin, Limits, LoopbackHost, Origins
from controlnet.web.service import BadRequest, Service, as_bad_request


def create_app(engine, limits: Limits | None = None, auth: dict[str, str] | None = None,
               origins: Origins | None = None) -> FastAPI:
    """engine: a `controlnet.web.engine.Engine` (models loaded). auth: {user: password}; when given,
    every route (page included) needs HTTP basic auth, and each user sees only their own jobs.
    origins: the other web pages that may call the server (none by default). The worker runs while
    the app is served."""
    service = Service(engine, limits or Limits())

    @asynccontextmanager
    async def lifespan(app):
        service.queue.start()
        yield
        service.queue.close()

    # no /docs: FastAPI's docs page loads its scripts from a CDN
    app = FastAPI(title="controlnet", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return exc.response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return as_bad_request(exc).response()

    for module in (a1111, jobs_api, page):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=service.limits.max_body_bytes)
    if auth:
        app.add_middleware(BasicAuth, creds=auth)
    app.add_middleware(CrossOrigin, origins=origins or Origins())  # before auth: preflights carry no credentials
    app.add_middleware(LoopbackHost, hosts=(origins or Origins()).hosts)  # added last = runs first
    return app
