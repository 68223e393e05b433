"""The web page: one HTML file and one script of our own, calling this server's /jobs API. Nothing
is loaded from elsewhere (no fonts, CDNs or analytics), and the Content-Security-Policy says so to
the browser too, so the page works with no internet at all."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse

from controlnet.web import modules, schema

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
    types = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
    if name not in types:
        return JSONResponse({"error": "NotFound", "detail": f"no static file {name!r}"}, status_code=404)
    return _file(name, types[name])


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    """Browsers ask for it whatever the page links; the SVG icon (an .ico is not needed by any of them)."""
    return _file("favicon.svg", "image/svg+xml")


@router.get("/config", include_in_schema=False)
async def config(request: Request):
    """What the page needs to build its form: with the defaults the API applies to a value left out
    (`defaults`, `recommended`: each ControlNet's recommended.json in A1111 terms, by model title;
    `union_models` and the union type each Control Type selects for them, `union_types`)."""
    service = request.app.state.service
    return {"units": service.limits.units, "default_size": service.engine.default_size, "model": service.model_title,
            "max_side": service.limits.max_side, "max_batch": service.limits.max_batch, "defaults": schema.DEFAULTS,
            "recommended": {title: _recommended(service.engine, title) for title in service.engine.controlnet_titles()},
            "union_models": list(service.engine.union_titles()), "union_types": modules.UNION_OF_CONTROL_TYPE}


def _recommended(engine, title: str) -> dict:
    """One ControlNet's recommended settings under the A1111 field names the page uses."""
    return schema.recommended_settings([engine.controlnets[engine.find_controlnet(title)]])
