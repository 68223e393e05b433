"""Images arrive as base64 only. A server path or URL in their place is refused: a request must
never make the server read its own files or fetch from the network. The pixel count in the
header is checked before any pixel is decoded."""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

from controlnet.errors import InputError

DATA_URL = re.compile(r"^data:[\w/.+-]*;base64,", re.IGNORECASE)
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
PATHLIKE = re.compile(r"^(/|\./|\.\./|~|[a-z]:[\\/])|\.(png|jpe?g|webp|bmp|gif|tiff?)$", re.IGNORECASE)


class FieldError(InputError):
    """An InputError that knows which request field it is about (422 names it)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def decode_image(field: str, value, max_pixels: int) -> np.ndarray:
    """A base64 (or data-URL) encoded image -> array, via the package's one image reader (which
    refuses more than `max_pixels` from the header, before decoding)."""
    from controlnet.images import TooManyPixels, load_image

    if not isinstance(value, str):
        raise FieldError(field, f"must be a base64-encoded image (a string), got {type(value).__name__}")
    text = value.strip()
    data = _b64(text)
    if data is None:
        raise FieldError(field, _why_not_base64(text))
    try:
        return load_image(data, max_pixels=max_pixels)
    except TooManyPixels as exc:
        message = str(exc).replace("the encoded image", "the image")
        raise FieldError(field, f"{message} (this server's --max-input-pixels)") from None
    except InputError as exc:
        raise FieldError(field, str(exc).replace("the encoded image", "the decoded data")) from None


def _b64(text: str) -> bytes | None:
    body = re.sub(r"\s+", "", DATA_URL.sub("", text, count=1))
    if not body:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _why_not_base64(text: str) -> str:
    if not text:
        return "is empty; send the image as a base64 string"
    if URL.match(text):
        return "URLs are not accepted (the server never fetches); send the image itself, base64-encoded"
    if PATHLIKE.search(text):
        return "file paths are not accepted (the server never reads its own files for a request); send the image base64-encoded"
    return "is not valid base64 (send a PNG/JPEG/WebP as base64, optionally with a data:image/...;base64, prefix)"
