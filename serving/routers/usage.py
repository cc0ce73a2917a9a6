"""GET /v1/usage: the calling tenant's usage state."""

from typing import Annotated

from fastapi import APIRouter, Query

from serving.admission import Subject
from serving.deps import CallerDep, RuntimeDep
from serving.http import JSONResponse
from serving.usage import usage_state

router = APIRouter(tags=["usage"])


@router.get("/v1/usage")
async def get_usage(
    caller: CallerDep,
    rt: RuntimeDep,
    user: Annotated[str | None, Query(max_length=256, description="an end user's id")] = None,
):
    subject = Subject(caller.tenant.tenant.tenant_id, caller.api_key_id, user or "")
    return JSONResponse(usage_state(rt.admission, caller.tenant, subject))
