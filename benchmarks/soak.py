"""A few minutes of mixed traffic (streaming and not, several tenants, some driven into refusals) from an
async client in this process against the API's process; reports requests, errors and the API's memory."""

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import httpx

from benchmarks.api import ADMIN, BODY


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _soak(api, seconds: float, concurrency: int, rss: list[float]) -> Counter:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        keys = [api.key]
        for i, plan in enumerate(["free", "free", "pro", "team", "credits_free"]):
            r = await http.post("/admin/tenants", json={"name": f"soak-{i}", "plan": plan}, headers=admin)
            keys.append(r.json()["api_key"])
        statuses: Counter = Counter()
        deadline = time.monotonic() + seconds
        rng = random.Random(7)

        async def worker(n: int) -> None:
            while time.monotonic() < deadline:
                key = keys[rng.randrange(len(keys))]
                body = {
                    **BODY,
                    "max_tokens": rng.choice([16, 64, 256]),
                    "user": f"u{rng.randrange(50)}",
                    "stream": rng.random() < 0.3,
                }
                try:
                    r = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                    await r.aread()
                    statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[f"error:{type(exc).__name__}"] += 1

        async def sample_rss() -> None:  # a leak keeps growing; warm-up (caches, arenas) levels off
            while time.monotonic() < deadline:
                await asyncio.sleep(seconds / 6)
                rss.append(rss_mb(api.proc.pid))

        await asyncio.gather(sample_rss(), *(worker(n) for n in range(concurrency)))
    return statuses


def bench_soak(api, seconds: float, concurrency: int = 32) -> dict:
    start_rss = rss_mb(api.proc.pid)
    rss: list[float] = []
    statuses = asyncio.run(_soak(api, seconds, concurrency, rss))
    errors = {str(s): n for s, n in statuses.items() if isinstance(s, str) or s >= 500}
    return {
        "soak.seconds": seconds,
        "soak.requests": sum(statuses.values()),
        "soak.ok": statuses.get(200, 0),
        "soak.refused_429": statuses.get(429, 0),
        "soak.errors": sum(errors.values()),
        "soak.error_kinds": errors,
        "soak.rss_start_mb": start_rss,
        "soak.rss_end_mb": rss_mb(api.proc.pid),
        "soak.rss_samples_mb": rss,
    }
