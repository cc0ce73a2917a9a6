"""Dependencies shared by the routers: the runtime, the calling tenant, the operator."""

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serving.errors import ApiError
from serving.runtime import Runtime, TenantContext


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: TenantContext
    api_key_id: str


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def current_caller(request: Request, rt: RuntimeDep) -> Caller:
    key = rt.api_key(bearer(request))
    if key is None:
        raise ApiError(
            401, "invalid or revoked API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
    tenant = rt.tenant_context(key.tenant_id)
    if tenant is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
    return Caller(tenant, key.key_id)


CallerDep = Annotated[Caller, Depends(current_caller)]


async def require_admin(request: Request, rt: RuntimeDep) -> None:
    token = bearer(request)
    if not hmac.compare_digest(token.encode(), rt.settings.admin_token.encode()):
        raise ApiError(
            401,
            "admin endpoints need the operator's admin token",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Depends(require_admin)
