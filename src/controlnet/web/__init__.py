"""`controlnet serve`: a web page and an AUTOMATIC1111-compatible HTTP API in one ASGI app.

- `engine`: the models (loaded once) and what a job does with them.
- `schema`: A1111 / sd-webui-controlnet request fields -> checked requests (422 names the field).
- `inputs`: base64 images only (paths and URLs refused), pixel limit before decoding.
- `jobs`: the bounded queue and its one worker thread; interrupt, cancel, job ids.
- `results`: outputs as PNGs carrying their parameters, A1111's `{images, parameters, info}`.
- `a1111`, `jobs_api`, `page`: the routes; `guard`: HTTP basic auth, allowed
  origins (CSRF) and hosts (DNS rebinding), the body-size limit and JSON shape.
- `app`: puts them together (`create_app`).
"""

from controlnet.web.app import create_app
from controlnet.web.guard import Limits, Origins

__all__ = ["Limits", "Origins", "create_app"]
