"""Durable appends by the event log alone: many concurrent appenders, group commit with fsync."""

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from chatmeter.ids import uuid7
from serving.eventlog import EventLog

EVENTS = 200_000
APPENDERS = 512


def _event(i: int) -> dict:
    return {
        "event_id": uuid7(),
        "idempotency_key": None,
        "occurred_at": datetime.now(UTC),
        "tenant_id": f"tn_{i % 100}",
        "api_key_id": "key_1",
        "end_user_id": f"u{i % 1000}",
        "conversation_id": None,
        "context": "api",
        "kind": "chat",
        "status": "ok",
        "provider": "simulated",
        "model": "gpt-4o-mini",
        "input_tokens": 120,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 80,
        "reasoning_tokens": 0,
        "tool_calls": 0,
        "credits": Decimal(1),
        "provider_cost_usd": Decimal("0.0000660"),
        "latency_ms": 3,
        "usage_estimated": False,
        "embedding_tokens": 0,
        "error_code": None,
    }


async def _run(data_dir: Path) -> float:
    log = EventLog(data_dir, "bench")
    log.recover()
    await log.start()
    per_task = EVENTS // APPENDERS

    async def appender(n: int) -> None:
        for i in range(per_task):
            await log.append(_event(n * per_task + i))

    started = time.perf_counter()
    await asyncio.gather(*(appender(n) for n in range(APPENDERS)))
    elapsed = time.perf_counter() - started
    await log.close()
    return per_task * APPENDERS / elapsed


def bench_log(workdir: Path, repeats: int) -> dict:
    import uvloop

    rates = [uvloop.run(_run(workdir / f"log-{r}")) for r in range(repeats)]
    rates.sort()
    return {"log.events_per_s": round(rates[len(rates) // 2]), "log.appenders": APPENDERS}
