"""The web page: one HTML file and one script of our own, calling this server's /jobs API. Nothing
is loaded from elsewhere (no fonts, CDNs or analytics), and the Content-Security-Policy says so to
the browser too, so the page works with no internet at all."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse

router = APIRouter()
STATIC = Path(__file__).parent / "static"
CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'"


def _file(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
async def index():
    return _file("index.html", "text/html; charset=utf-8")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    types = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
    if name not in types:
        return JSONResponse({"error": "NotFound", "detail": f"no static file {name!r}"}, status_code=404)
    return _file(name, types[name])


@router.get("/config", include_in_schema=False)
async def config(request: Request):
    """What the page needs to build its form."""
    service = request.app.state.service
    return {"units": service.limits.units, "default_size": service.engine.default_size, "model": service.model_title,
            "max_side": service.limits.max_side, "max_batch": service.limits.max_batch}
