"""Who may talk to the server and how much they may send: HTTP basic auth (A1111's `--api-auth`)
and the request-size limits, checked before a request reaches a route."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass

from controlnet.errors import InputError
from controlnet.web.cost import StepCost


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond these the server refuses instead of running out of memory."""

    queue_size: int = 8  # jobs waiting (the running one not counted); full -> 503
    max_side: int = 2048  # output width/height in pixels
    max_batch: int = 8  # batch_size * n_iter images per request
    max_steps: int = 150
    max_body_mb: float = 64.0  # the whole JSON body
    max_input_pixels: int = 4096 * 4096  # one uploaded image, checked from its header before decoding
    units: int = 3  # ControlNet units per request (A1111's control_net_unit_count)
    abandon_after: float = 30.0  # seconds without a poll before a /jobs job is cancelled
    keep_jobs: int = 64  # finished jobs whose results stay available at /jobs/{id}
    max_job_seconds: float = 600.0  # a request estimated to run longer is refused (422); see web.cost
    max_prompt_tokens: int = 1000  # prompt and negative prompt, each
    step_cost: StepCost | None = None  # seconds per network forward (web.cost); None: measured at startup

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def parse_auth(text: str | None) -> dict[str, str]:
    """'user:pass[,user2:pass2]' (A1111's --api-auth) -> {user: password}."""
    if text is None:
        return {}
    creds = {}
    for pair in text.split(","):
        user, sep, password = pair.strip().partition(":")
        if not sep or not user or not password:
            raise InputError(f"--api-auth: expected user:password (comma-separated for several), got {pair.strip()!r}")
        creds[user] = password
    return creds


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())] + (headers or [])
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


class BasicAuth:
    """Every HTTP request (page, static files, API) needs one of the user:password pairs."""

    def __init__(self, app, creds: dict[str, str]):
        self.app, self.creds = app, creds

    def _ok(self, header: bytes | None) -> bool:
        if not header or not header.lower().startswith(b"basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.creds.get(user)
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._ok(dict(scope["headers"]).get(b"authorization")):
            return await self.app(scope, receive, send)
        await _send_json(send, 401, {"error": "Unauthorized", "detail": "this server needs a user and password (HTTP basic auth)"},
                         [(b"www-authenticate", b'Basic realm="controlnet"')])


class BodyLimit:
    """Reads the body up to `limit` bytes before the app sees it; more is answered 413 at once."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._too_large(send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for http.disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        mb = self.limit / 1024 / 1024
        await _send_json(send, 413, {"error": "PayloadTooLarge",
                                     "detail": f"the request body is larger than {mb:g} MB (--max-body-mb); send smaller images"})
