"""Synthetic usage history: past events written straight into the Parquet log, as another writer would.

The demo backfills a month for its tenants this way (usage the running API did not see live: it learns of
it through the pipeline's next limit snapshot). Events follow the log's contract: dense seq per writer,
one file per day, temp file then atomic rename.
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from chatmeter.catalog import Catalog
from chatmeter.files import write_parquet
from chatmeter.ids import uuid7
from chatmeter.metering import Usage
from chatmeter.pricing import provider_cost
from chatmeter.schemas import EVENT_PARQUET_OPTIONS, EVENT_SCHEMA

MODELS = ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest")


@dataclass(frozen=True)
class TenantHistory:
    tenant_id: str
    api_key_id: str
    start: datetime  # the first event's time
    tokens_per_day: int  # average; each day varies around it
    end_users: int = 5


def backfill(
    catalog: Catalog,
    events_dir: Path,
    histories: list[TenantHistory],
    until: datetime,
    writer_id: str = "history",
    seed: int = 7,
) -> int:
    """Write the events of every history from its start to `until`; returns how many."""
    rng = random.Random(seed)
    by_day: dict[str, list[dict]] = {}
    for h in histories:
        day = h.start
        while day < until:
            budget = int(h.tokens_per_day * rng.uniform(0.6, 1.4) * (0.5 if day.weekday() >= 5 else 1.0))
            while budget > 0:
                at = day + timedelta(seconds=rng.randrange(86_400))
                if at >= until:
                    break
                event = _event(catalog, h, at, rng, writer_id)
                budget -= event["input_tokens"] + event["output_tokens"]
                by_day.setdefault(at.date().isoformat(), []).append(event)
            day += timedelta(days=1)
    seq = 0
    written = 0
    for day in sorted(by_day):
        rows = sorted(by_day[day], key=lambda e: e["occurred_at"])
        first = seq + 1
        for row in rows:
            seq += 1
            row["seq"] = seq
        write_parquet(
            pa.Table.from_pylist(rows, schema=EVENT_SCHEMA),
            events_dir / f"event_date={day}" / f"{writer_id}-{first:012d}-{seq:012d}.parquet",
            **EVENT_PARQUET_OPTIONS,
        )
        written += len(rows)
    return written


def _event(catalog: Catalog, h: TenantHistory, at: datetime, rng: random.Random, writer_id: str) -> dict:
    model = rng.choice(MODELS)
    input_tokens = rng.randint(40, 900)
    cached = (input_tokens // 64) * 64 if input_tokens >= 1024 else 0
    usage = Usage(input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=rng.randint(20, 400))
    return {
        "event_id": uuid7(),
        "idempotency_key": None,
        "occurred_at": at,
        "writer_id": writer_id,
        "tenant_id": h.tenant_id,
        "api_key_id": h.api_key_id,
        "end_user_id": f"user-{rng.randrange(h.end_users) + 1}",
        "conversation_id": uuid7(),
        "context": "api",
        "kind": "chat",
        "status": "ok",
        "provider": "simulated",
        "model": model,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": 0,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": 0,
        "tool_calls": 0,
        "credits": catalog.credits.for_event("chat", model).quantize(Decimal("0.000001")),
        "provider_cost_usd": provider_cost(catalog, model, usage, None, at).quantize(Decimal("0.000000001")),
        "latency_ms": rng.randint(200, 2500),
        "usage_estimated": False,
        "embedding_tokens": 0,
        "error_code": None,
        "event_date": at.astimezone(UTC).date(),
    }
