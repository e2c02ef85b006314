"""Serving a checked ensemble over HTTP (`mll serve`, issue #40).

MLflow's own scoring server (the ``/invocations``, ``/ping``, ``/health`` and ``/version`` API
of ``mlflow models serve``) on a model folder that
:func:`~mll_registry.selection.ensemble_trust.fetch_verified` checked to be one of this tool's
ensembles, behind a bound on the request body (:class:`BodyLimit`): a body larger than the
``serve_max_*`` settings allow is refused with a 400 before it is read whole. The per-image
bounds (count, bytes, pixels) are the ensemble's own (:class:`~mll_registry.selection.ensemble.
RequestLimits`), each a 400 naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: an HTTP request body over ``limit`` bytes gets a 400 naming the bound;
    the body is read at most ``limit`` bytes far (a declared Content-Length over it is refused
    before a byte is read), then handed to ``app`` whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({
            "error_code": "BAD_REQUEST",
            "message": f"request body over {self.limit:,} bytes (serve_max_images x "
                       "serve_max_image_mb, base64-encoded); send fewer or smaller images"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if declared is not None and int(declared) > self.limit:
                await self._refuse(send)
                return
        except ValueError:
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = bool(msg.get("more_body"))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def app_for(model_dir: str | os.PathLike[str], body_limit: int) -> ASGIApp:
    """MLflow's scoring app for the checked model folder ``model_dir``, behind
    :class:`BodyLimit`. MLflow's loader calls this tool's loader module, which checks the
    folder again (:func:`~mll_registry.selection.ensemble_loader._load_pyfunc`)."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(str(model_dir))
    return BodyLimit(scoring_server.init(model), body_limit)


def serve(model_dir: str | os.PathLike[str], host: str, port: int, body_limit: int) -> None:
    """Serve the checked model folder ``model_dir`` on ``host:port`` until interrupted."""
    import uvicorn

    uvicorn.run(app_for(model_dir, body_limit), host=host, port=port, workers=1,
                log_level="warning")
