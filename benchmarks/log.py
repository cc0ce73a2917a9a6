"""Durable appends by the event log alone: many concurrent appenders, group commit, synchronous writes."""

import asyncio
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _run(data_dir: Path) -> tuple[float, float]:
    """Appends per second, and CPU seconds per append (this process's threads, event loop and roll, and the WAL's
    writer process, whose figures come once it ended, at close)."""
    writers_before = _children_cpu()
    log = EventLog(data_dir, "bench")
    log.recover()
    await log.start()
    per_task = EVENTS // APPENDERS
    # Built before the clock starts, since what is measured is the writer alone, and in the order they are
    # appended, so that each is read from memory as warm as a request's event built just before its append.
    events: list[list[dict]] = [[] for _ in range(APPENDERS)]
    for i in range(per_task):
        for n, mine in enumerate(events):
            mine.append(_event(n * per_task + i))

    async def appender(mine: list[dict]) -> None:
        for event in mine:
            await log.submit(event)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*map(appender, events))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await log.close()
    cpu += _children_cpu() - writers_before
    return per_task * APPENDERS / elapsed, cpu / (per_task * APPENDERS)


def bench_log(workdir: Path, repeats: int) -> dict:
    import uvloop

    runs = [uvloop.run(_run(workdir / f"log-{r}")) for r in range(repeats)]
    rates = sorted(rate for rate, _ in runs)
    cpus = sorted(cpu for _, cpu in runs)
    return {
        "log.events_per_s": round(rates[len(rates) // 2]),
        "log.cpu_us_per_event": round(cpus[len(cpus) // 2] * 1e6, 1),
        "log.appenders": APPENDERS,
    }
