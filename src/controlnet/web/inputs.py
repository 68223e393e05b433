"""Images arrive as base64 only. A server path or URL in their place is refused: a request must
never make the server read its own files or fetch from the network. The pixel count in the
header is checked before any pixel is decoded."""

from __future__ import annotations

import base64
import binascii
import io
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
    """A base64 (or data-URL) encoded image -> array, via the package's one image reader."""
    from PIL import Image, UnidentifiedImageError

    from controlnet.images import load_image

    if not isinstance(value, str):
        raise FieldError(field, f"must be a base64-encoded image (a string), got {type(value).__name__}")
    text = value.strip()
    data = _b64(text)
    if data is None:
        raise FieldError(field, _why_not_base64(text))
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:  # PIL's own guard, far above ours
        count = re.search(r"\((\d+) pixels\)", str(exc))
        w, h = (int(count.group(1)) if count else max_pixels + 1), 1
    except (UnidentifiedImageError, OSError, ValueError):
        w = h = 0  # load_image below names the problem
    if w * h > max_pixels:
        size = f"{w}×{h} = {w * h:,}" if h > 1 else f"{w:,}"
        raise FieldError(field, f"the image is {size} pixels, more than the {max_pixels:,} this server "
                                "accepts (--max-input-pixels); downscale it")
    try:
        return load_image(data)
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
