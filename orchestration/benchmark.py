"""Time the pipeline on synthetic logs: a full build, a daily incremental run, and a snapshot run.

    python -m orchestration.benchmark --events 1000000 --data-dir /tmp/bench1m

Writes the log the way serving does (per day and writer, dense seqs) and prints one JSON object.
"""

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.schemas import EVENT_PARQUET_OPTIONS, EVENT_SCHEMA
from chatmeter.settings import Settings
from chatmeter.store import Store

PLANS = ["free", "pro", "enterprise", "team", "scale", "payg", "credits_starter", "credits_professional"]
WRITERS = ["api-1", "api-2", "api-3", "api-4"]


def last_seq(settings: Settings, writer: str) -> int:
    """The writer's last seq in the log, from its file names (<writer>-<first>-<last>.parquet)."""
    names = (p.name.removesuffix(".parquet") for p in settings.events_dir.glob(f"*/{writer}-*.parquet"))
    return max((int(n.rsplit("-", 1)[1]) for n in names), default=0)


def write_log(
    settings: Settings, n_events: int, n_tenants: int, first_day: date, days: int, growth: float = 0.0, seed: int = 7
) -> None:
    """`growth`: daily volume rises linearly by this fraction over the period (0: stationary). Called again on
    the same data dir (more days), it reuses the tenants and continues each writer's seqs."""
    rng = np.random.default_rng(seed)
    store = Store(settings.metadata_url)
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    existing = {t.name: t.tenant_id for t in store.list_tenants()}
    tenants = [
        existing.get(f"bench {i}") or store.create_tenant(f"bench {i}", PLANS[i % len(PLANS)], at=start)[0].tenant_id
        for i in range(n_tenants)
    ]
    store.engine.dispose()
    weights = np.array([1 + growth * d / max(days - 1, 1) for d in range(days)])
    per_day = np.floor(n_events * weights / weights.sum()).astype(int)
    per_day[-1] += n_events - per_day.sum()
    seq = {w: last_seq(settings, w) for w in WRITERS}
    for d in range(days):
        day = first_day + timedelta(days=d)
        n = int(per_day[d])
        micros = np.sort(rng.integers(0, 86_400_000_000, n))
        at = np.datetime64(day.isoformat(), "us") + micros.astype("timedelta64[us]")
        writer = rng.integers(0, len(WRITERS), n)
        kind = np.where(rng.random(n) < 0.9, "chat", "embedding")
        status = np.where(rng.random(n) < 0.97, "ok", np.where(rng.random(n) < 0.5, "error", "rejected"))
        inp = rng.integers(10, 2000, n)
        out = rng.integers(0, 800, n)
        chat = kind == "chat"
        columns = {
            "event_id": pa.array([str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, n)]),
            "idempotency_key": pa.nulls(n, pa.string()),
            "occurred_at": pa.array(at, EVENT_SCHEMA.field("occurred_at").type),
            "tenant_id": pa.array(np.array(tenants)[rng.integers(0, n_tenants, n)]),
            "api_key_id": pa.array([f"key_{i}" for i in rng.integers(0, 3, n)]),
            "end_user_id": pa.array([f"user_{i}" for i in rng.integers(0, 200, n)]),
            "conversation_id": pa.nulls(n, pa.string()),
            "context": pa.array(["api"] * n),
            "kind": pa.array(kind),
            "status": pa.array(status),
            "provider": pa.array(["simulated"] * n),
            "model": pa.array(["gpt-4o-mini"] * n),
            "input_tokens": pa.array(np.where(chat, inp, 0)),
            "cached_input_tokens": pa.array(np.zeros(n, dtype=np.int64)),
            "cache_write_tokens": pa.array(np.zeros(n, dtype=np.int64)),
            "output_tokens": pa.array(np.where(chat, out, 0)),
            "reasoning_tokens": pa.array(np.zeros(n, dtype=np.int64)),
            "tool_calls": pa.array(np.zeros(n, dtype=np.int64)),
            "credits": pa.array(np.where(chat, 1, 0).astype(str)).cast(pa.decimal128(18, 6)),
            # gpt-4o-mini-like prices: 0.15 / 0.60 USD per million tokens, in nano-dollars.
            "provider_cost_usd": pa.array(
                [f"{x / 1e9:.9f}" for x in np.where(chat, inp * 150 + out * 600, inp * 20)]
            ).cast(pa.decimal128(18, 9)),
            "latency_ms": pa.array(rng.integers(5, 500, n)),
            "usage_estimated": pa.array(np.zeros(n, dtype=bool)),
            "embedding_tokens": pa.array(np.where(chat, 0, inp)),
            "error_code": pa.nulls(n, pa.string()),
            "event_date": pa.array([day] * n, pa.date32()),
        }
        for w, name in enumerate(WRITERS):
            mask = writer == w
            count = int(mask.sum())
            if not count:
                continue
            cols = {k: pa.array(v).filter(pa.array(mask)) for k, v in columns.items()}
            cols["writer_id"] = pa.array([name] * count)
            cols["seq"] = pa.array(np.arange(seq[name] + 1, seq[name] + count + 1, dtype=np.int64))
            table = pa.table({f.name: cols[f.name] for f in EVENT_SCHEMA}, schema=EVENT_SCHEMA)
            folder = settings.events_dir / f"event_date={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(
                table, folder / f"{name}-{seq[name] + 1}-{seq[name] + count}.parquet", **EVENT_PARQUET_OPTIONS
            )
            seq[name] += count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--growth", type=float, default=0.0, help="volume rise over the period, e.g. 1.0 doubles")
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    import dagster as dg

    from orchestration.defs.forecast.assets import usage_forecasts
    from orchestration.resources import pipeline_resources
    from orchestration.run import run_pipeline

    settings = Settings(data_dir=args.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    as_of = datetime(2026, 11, 20, 12, tzinfo=UTC)
    first = as_of.date() - timedelta(days=args.days - 1)
    t0 = time.perf_counter()
    write_log(settings, args.events, args.tenants, first, args.days, args.growth)
    t1 = time.perf_counter()
    ok = run_pipeline(settings, as_of=as_of)
    t2 = time.perf_counter()
    # The daily run: the whole pipeline, re-processing only the last day.
    daily_ok = run_pipeline(settings, as_of=as_of, days=(as_of.date(), as_of.date()))
    t3 = time.perf_counter()
    resources = pipeline_resources(settings, as_of.isoformat(), stripe_key="unused")
    forecast = dg.materialize([usage_forecasts], resources=resources)
    meta = {k: v.value for k, v in forecast.asset_materializations_for_node("usage_forecasts")[0].metadata.items()}
    sys.stdout.write(
        json.dumps(
            {
                "events": args.events,
                "tenants": args.tenants,
                "days": args.days,
                "growth": args.growth,
                "pipeline_ok": ok and daily_ok,
                "generate_s": round(t1 - t0, 1),
                "full_pipeline_s": round(t2 - t1, 1),
                "daily_incremental_s": round(t3 - t2, 1),
                "backtest_points": meta["backtest_points"],
                "backtest_mape_model": meta["backtest_mape_model"],
                "backtest_mape_naive_run_rate": meta["backtest_mape_naive_run_rate"],
            }
        )
        + "\n"
    )
    return 0 if ok and daily_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
