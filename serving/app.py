"""The FastAPI app: routers, error envelope, body limit, lifespan of the runtime."""

import logging
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
    """413 for a body over the limit, whether or not it declares its length; nothing else is read."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> ApiError:
        return ApiError(413, f"request body over {self.max_bytes} bytes", code="request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await error_response(self.too_large())(scope, receive, send)
            except ValueError:
                return await error_response(ApiError(400, "bad Content-Length", code="bad_content_length"))(
                    scope, receive, send
                )
            return await self.app(scope, receive, send)
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
