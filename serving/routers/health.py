"""GET /healthz and GET /metrics."""

from fastapi import APIRouter
from starlette.responses import Response

from serving import metrics
from serving.deps import RuntimeDep
from serving.http import JSONResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(rt: RuntimeDep):
    return JSONResponse(
        {
            "status": "ok",
            "writer_id": rt.settings.writer_id,
            "provider": rt.provider.name,
            "catalog": rt.catalog.version,
            "snapshot_id": rt.admission.snapshot_id,
            "open_holds": rt.admission.open_holds(),
        }
    )


@router.get("/metrics")
async def prometheus_metrics():
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
