"""The FastAPI app: routers, error envelope, body limit, lifespan of the runtime."""

import logging
from collections.abc import Awaitable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatmeter.settings import Settings
from serving import errors, metrics
from serving.errors import ApiError, error_response
from serving.providers.base import Provider
from serving.routers import admin, chat, health, usage, webhooks, widget
from serving.runtime import Runtime

log = logging.getLogger(__name__)


class BodyLimit:
    """413 for a body over the limit, whether or not it declares its length; nothing else is read.

    `__call__` is a plain function handing back what to await: for a body that declares a length within the
    limit (nearly every request), the app's own coroutine, so a request waiting for its event's batch
    suspends and resumes through no frame of this middleware.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> ApiError:
        return ApiError(413, f"request body over {self.max_bytes} bytes", code="request_too_large")

    def __call__(self, scope, receive, send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is None:
            return self._counting(scope, receive, send)
        try:
            length = int(declared)
        except ValueError:
            return error_response(ApiError(400, "bad Content-Length", code="bad_content_length"))(scope, receive, send)
        if length > self.max_bytes:
            return error_response(self.too_large())(scope, receive, send)
        return self.app(scope, receive, send)

    async def _counting(self, scope, receive, send) -> None:
        """A body of undeclared length (chunked): counted as it is read."""
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read, so the app's error handler answers 413.
                    raise StarletteHTTPException(413, self.too_large().message)
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None, provider: Provider | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime(settings, provider)
        await runtime.start()
        app.state.runtime = runtime
        collector = metrics.RuntimeCollector(runtime)
        metrics.registry.register(collector)
        try:
            yield
        finally:
            metrics.registry.unregister(collector)
            await runtime.close()

    app = FastAPI(
        title="chatmeter",
        version="0.1.0",
        description="Multi-tenant AI chat with exact usage metering, limits and billing.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(chat.router)
    if settings.bench_routes:  # matched as early as the metered route, so routing costs both the same
        app.include_router(chat.bench_router)
    for module in (usage, widget, admin, webhooks, health):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
