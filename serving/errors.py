"""One error envelope for every error: {"error": {"type", "code", "message", ...}}, never a 500 for bad input."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.http import JSONResponse

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_required",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type or _TYPES.get(status, "api_error")
        self.headers = headers
        self.extra = extra

    def body(self) -> dict:
        return {"error": {"type": self.type, "code": self.code, "message": self.message, **self.extra}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        response = error_response(exc)
        origin = request.headers.get("origin")
        if origin and request.url.path.startswith("/chat/"):
            # Let the widget read why it was refused; the body holds nothing of the tenant's.
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errs):
            return error_response(ApiError(400, "request body is not valid JSON", code="invalid_json"))
        if any(err.get("type") == "missing" and tuple(err.get("loc", ())) == ("body",) for err in errs):
            return error_response(ApiError(400, "request body is empty: send a JSON object", code="empty_body"))
        return error_response(ApiError(422, _validation_message(exc), code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(
            ApiError(
                exc.status_code,
                str(exc.detail),
                code=_TYPES.get(exc.status_code),
                headers=getattr(exc, "headers", None),
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(ApiError(500, "internal error", code="internal_error", type="api_error"))
