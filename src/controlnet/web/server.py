"""Serving the app with uvicorn so that SIGTERM / Ctrl-C end it within seconds: when shutdown
begins the jobs are cancelled (the running one stops before its next network block, the waiting
requests are answered 503), and requests still open after `grace` seconds are dropped."""

from __future__ import annotations

GRACE_SECONDS = 5.0


def make_server(app, host: str, port: int, grace: float = GRACE_SECONDS, log_level: str = "warning"):
    """A uvicorn.Server for `app` (from `create_app`); `.run()` serves until a signal or `should_exit`."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            app.state.service.queue.shut()  # before uvicorn waits for the open requests
            await super().shutdown(sockets)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=grace)
    return Server(config)
