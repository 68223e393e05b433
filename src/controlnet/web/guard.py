"""Who may talk to the server and how much they may send, checked before a request reaches a route:
HTTP basic auth (A1111's `--api-auth`), which web pages may call it (their `Origin`, A1111's
`--cors-allow-origins`), the `Host` a loopback server answers to (against DNS rebinding), the
request-size limits and the shape of a JSON body (nesting depth, valid Unicode text)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from controlnet.errors import InputError
from controlnet.web.cost import StepCost
from controlnet.web.inputs import FieldError


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
    """Every HTTP request (page, static files, API) needs one of the user:password pairs; the user's
    name goes into the request's scope (`user_of`), since each user sees only their own jobs."""

    def __init__(self, app, creds: dict[str, str]):
        self.app, self.creds = app, creds

    def _user(self, header: bytes | None) -> str | None:
        if not header or not header.lower().startswith(b"basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.creds.get(user)
        return user if expected is not None and secrets.compare_digest(expected.encode(), password.encode()) else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        user = self._user(dict(scope["headers"]).get(b"authorization"))
        if user is not None:
            return await self.app({**scope, "user": user}, receive, send)
        await _send_json(send, 401, {"error": "Unauthorized", "detail": "this server needs a user and password (HTTP basic auth)"},
                         [(b"www-authenticate", b'Basic realm="controlnet"')])


def user_of(request) -> str | None:
    """Who sent the request (the --api-auth user); None without auth: then everyone is one user."""
    return request.scope.get("user")


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


# ------------------------------------------------------------------ which web pages may call the server

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(origin: str) -> str | None:
    """'HTTP://LocalHost' -> 'http://localhost:80' (what two origins are compared by); None if malformed."""
    try:
        parts = urlsplit(origin)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


def _same_origin(origin: str, host: str | None) -> bool:
    """The page that sent the request was served by this server: its origin names the Host it asked."""
    key = _origin_key(origin)
    return bool(host) and key is not None and key == _origin_key(f"{urlsplit(origin).scheme}://{host}")


@dataclass(frozen=True)
class Origins:
    """Which other web pages may call the server (A1111's --cors-allow-origins and its -regex; '*'
    allows any) — its own page always may — and extra names a loopback server answers to (--host)."""

    allow: tuple[str, ...] = ()
    regex: str | None = None
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_flags(cls, allow: str | None = None, regex: str | None = None, host: str | None = None) -> Origins:
        keys = []
        for item in filter(None, (part.strip() for part in (allow or "").split(","))):
            key = "*" if item == "*" else _origin_key(item)
            if key is None:
                raise InputError(f"--cors-allow-origins: expected origins such as http://localhost:3000 "
                                 f"(scheme://host[:port], comma-separated), got {item!r}")
            keys.append(key)
        try:
            re.compile(regex or "")
        except re.error as exc:
            raise InputError(f"--cors-allow-origins-regex: not a regular expression ({exc}): {regex!r}") from None
        return cls(tuple(keys), regex or None, (host.lower(),) if host else ())

    def allows(self, origin: str) -> bool:
        key = _origin_key(origin)
        if key is None:  # 'null' (sandboxed frames, file:// pages) and other malformed origins
            return False
        return "*" in self.allow or key in self.allow or bool(self.regex and re.fullmatch(self.regex, origin))


def _header(scope, name: bytes) -> str | None:
    value = dict(scope["headers"]).get(name)
    return None if value is None else value.decode("latin-1")


class CrossOrigin:
    """Browsers say which page sent a request (`Origin`). This server's own page and the allowed
    origins may call it (those get CORS headers and preflight answers); any other page gets 403,
    so a site the user visits cannot drive the server. Requests without Origin (curl, webuiapi) pass."""

    EXPOSE = b"Location, Retry-After, X-Job-Id"

    def __init__(self, app, origins: Origins):
        self.app, self.origins = app, origins

    async def __call__(self, scope, receive, send):
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or _same_origin(origin, _header(scope, b"host")):
            return await self.app(scope, receive, send)
        if not self.origins.allows(origin):
            return await _send_json(send, 403, {
                "error": "Forbidden", "field": "Origin",
                "detail": f"Origin: requests from the web page {origin!r} are refused; only this server's own page and "
                          "the origins given with --cors-allow-origins (or --cors-allow-origins-regex) may call it"})
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):  # a preflight
            asked = (_header(scope, b"access-control-request-headers") or "authorization, content-type").encode("latin-1")
            head = cors + [(b"access-control-allow-methods", b"GET, POST, OPTIONS"), (b"access-control-allow-headers", asked),
                           (b"access-control-max-age", b"600"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            return await send({"type": "http.response.body", "body": b""})

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors,
                                                  (b"access-control-expose-headers", self.EXPOSE)]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LoopbackHost:
    """A request that arrives on a loopback address must name this machine in `Host`: localhost, a
    loopback address, the machine's own name or --host. A web page whose own name was re-pointed at
    127.0.0.1 (DNS rebinding) still sends that name, and is refused. Requests arriving on other
    addresses (--listen) are protected by --api-auth instead."""

    def __init__(self, app, hosts: tuple[str, ...] = ()):
        self.app, self.hosts = app, (*hosts, socket.gethostname().lower())

    async def __call__(self, scope, receive, send):
        server = scope.get("server") or ("", None)
        host = _header(scope, b"host") if scope["type"] == "http" else None
        if host and _is_loopback(str(server[0])) and not self._known(host, str(server[0])):
            return await _send_json(send, 403, {
                "error": "Forbidden", "field": "Host",
                "detail": f"Host: {host!r} is not a name of this server; it listens on a loopback address and answers "
                          "to localhost, 127.0.0.1 and [::1] (and its --host) only, so that no web page can reach it by "
                          f"re-pointing its own name at this machine (DNS rebinding). Open http://127.0.0.1:{server[1]}/"})
        await self.app(scope, receive, send)

    def _known(self, host: str, listening_on: str) -> bool:
        try:
            name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
        except ValueError:
            return False
        return (name == "localhost" or name.endswith(".localhost") or _is_loopback(name) or name == listening_on
                or name in self.hosts)


# ------------------------------------------------------------------ the JSON body

MAX_JSON_DEPTH = 32  # A1111 bodies nest 5 levels deep
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_json(content_type: str | None) -> bool:
    """`application/json`, with no charset or UTF-8 (what browsers cannot send cross-site without asking)."""
    media, *params = (content_type or "").lower().split(";")
    charset = next((p.split("=", 1)[1].strip(' "') for p in params if p.strip().startswith("charset=")), "utf-8")
    return media.strip() == "application/json" and charset in ("utf-8", "utf8")


def parse_json(raw: bytes):
    """The body as JSON, refused (FieldError naming the field) when it is malformed, nested deeper
    than MAX_JSON_DEPTH, or holds a lone surrogate, which is no text any model, PNG or JSON answer can carry."""
    try:
        value = json.loads(raw or b"null")
    except RecursionError:
        raise FieldError("body", _too_deep()) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise FieldError("body", f"the body is not valid JSON ({exc})") from None
    _check_tree(value)
    return value


def _too_deep() -> str:
    return f"nested deeper than {MAX_JSON_DEPTH} levels of lists/objects; an A1111 request needs about 5"


def _check_tree(value) -> None:
    """Walks the parsed body without recursion: depth and text (keys included)."""
    stack = [({"": value}, "", -1)]
    while stack:
        node, where, depth = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            raise FieldError("body", _too_deep())
        for key, item in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                raise FieldError(where or "body", f"the key {key!r} is not valid Unicode text (a lone surrogate); send UTF-8 text")
            if isinstance(item, (str, dict, list)):
                path = _path(where, key, isinstance(node, dict)) or "body"
                if isinstance(item, str) and not item.isascii() and _SURROGATE.search(item):
                    raise FieldError(path, f"is not valid Unicode text: it holds a lone surrogate "
                                           f"{_SURROGATE.search(item).group()!r}; send UTF-8 text")
                if not isinstance(item, str):
                    stack.append((item, path if depth >= 0 else "", depth + 1))


def _path(where: str, key, in_object: bool) -> str:
    """The field as messages name it: prompt, alwayson_scripts.controlnet.args[0].module."""
    if not in_object:
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


# ------------------------------------------------------------------ the server's paths

_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"`,;:()\[\]{}<>]+")
_ROUTES = ("sdapi", "controlnet", "jobs", "static", "config")  # named in messages: never shortened


def hide_paths(text: str) -> str:
    """Error messages name files by their names only: '/srv/models/x.safetensors: truncated' ->
    'x.safetensors: truncated'. Only paths on this machine's disk are shortened (their first folder
    exists), so API routes such as /controlnet/model_list stay as they are."""
    def name(match: re.Match) -> str:
        path = match.group()
        first = path.split("/")[1]
        if not first or first in _ROUTES or not os.path.isdir("/" + first):
            return path
        return path.rstrip("/").rsplit("/", 1)[-1] or path
    return _ABSOLUTE_PATH.sub(name, text)
