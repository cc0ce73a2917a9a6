"""From a limit snapshot written to the data dir to admission using it, in a running API."""

import hashlib
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.schemas import SNAPSHOT_SCHEMA
from chatmeter.windows import billing_month


def publish(snapshots_dir: Path, snapshot_id: str, rows: list[dict]) -> None:
    name = f"limits_{snapshot_id}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA), snapshots_dir / name)
    digest = hashlib.sha256((snapshots_dir / name).read_bytes()).hexdigest()
    tmp = snapshots_dir / ".current.json.tmp"
    tmp.write_text(
        json.dumps(
            {
                "snapshot_id": snapshot_id,
                "created_at": datetime.now(UTC).isoformat(),
                "watermark": {},
                "file": name,
                "rows": len(rows),
                "sha256": digest,
            }
        )
    )
    tmp.replace(snapshots_dir / "current.json")


def bench_snapshot(api, repeats: int) -> dict:
    """`api` is a running benchmarks.api.Api; each round publishes a new `used` and waits to see it."""
    headers = {"Authorization": f"Bearer {api.key}"}
    tenant = httpx.get(f"{api.url}/v1/usage", headers=headers).json()["tenantId"]
    anchor = datetime.fromisoformat(httpx.get(f"{api.url}/v1/usage", headers=headers).json()["periodStart"]).day
    window = billing_month(datetime.now(UTC), anchor)
    snapshots = api.data_dir / "snapshots"
    pickups = []
    for r in range(repeats):
        used = 1_000_000 + r
        publish(
            snapshots,
            f"bench{r}",
            [
                {
                    "tenant_id": tenant,
                    "scope": "tenant",
                    "scope_id": tenant,
                    "meter": "tokens",
                    "window": "month",
                    "window_start": window.start,
                    "window_end": window.end,
                    "used": Decimal(used),
                    "limit": None,
                    "remaining": None,
                }
            ],
        )
        written = time.perf_counter()
        while httpx.get(f"{api.url}/v1/usage", headers=headers).json()["monthlyUsage"] < used:
            time.sleep(0.005)
        pickups.append(time.perf_counter() - written)
    pickups.sort()
    return {"snapshot.pickup_s": round(pickups[len(pickups) // 2], 3), "snapshot.pickup_max_s": round(max(pickups), 3)}
