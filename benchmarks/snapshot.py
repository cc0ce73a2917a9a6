"""From a limit snapshot written to the data dir to admission using it, in a running API."""

import random
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pyarrow as pa

from chatmeter.schemas import SNAPSHOT_SCHEMA
from chatmeter.settings import Settings
from chatmeter.windows import billing_month
from orchestration.defs.snapshots.publish import publish_snapshot


def bench_snapshot(api, repeats: int) -> dict:
    """`api` is a running benchmarks.api.Api; each round publishes a new `used` and waits to see it."""
    headers = {"Authorization": f"Bearer {api.key}"}
    tenant = httpx.get(f"{api.url}/v1/usage", headers=headers).json()["tenantId"]
    anchor = datetime.fromisoformat(httpx.get(f"{api.url}/v1/usage", headers=headers).json()["periodStart"]).day
    window = billing_month(datetime.now(UTC), anchor)
    snapshots = api.data_dir / "snapshots"
    pickups = []
    rng = random.Random(3)
    for r in range(repeats):
        used = 1_000_000 + r
        # At a random point of the API's poll cycle: publishing right after it saw the last one would always
        # wait a whole interval.
        time.sleep(rng.uniform(0, Settings().reload_interval_s))
        publish_snapshot(  # the pipeline's own publisher
            snapshots,
            pa.Table.from_pylist(
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
                schema=SNAPSHOT_SCHEMA,
            ),
            {},
            datetime.now(UTC),
        )
        written = time.perf_counter()
        while httpx.get(f"{api.url}/v1/usage", headers=headers).json()["monthlyUsage"] < used:
            time.sleep(0.005)
        pickups.append(time.perf_counter() - written)
    pickups.sort()
    return {"snapshot.pickup_s": round(pickups[len(pickups) // 2], 3), "snapshot.pickup_max_s": round(max(pickups), 3)}
