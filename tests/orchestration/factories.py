"""Synthetic data for pipeline tests: event Parquet files in the log's layout and a metadata store."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.schemas import EVENT_SCHEMA
from chatmeter.settings import Settings
from chatmeter.store import Store

# The clock of every pipeline test: mid billing month for tenants anchored on the 15th.
AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def event(
    tenant_id: str,
    occurred_at: datetime,
    *,
    kind: str = "chat",
    status: str = "ok",
    input_tokens: int = 0,
    output_tokens: int = 0,
    embedding_tokens: int = 0,
    credits: str = "0",
    cost: str = "0",
    model: str = "gpt-4o-mini",
    end_user_id: str | None = None,
    api_key_id: str | None = "key_1",
    writer_id: str = "w1",
    seq: int = 0,
) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "idempotency_key": None,
        "occurred_at": occurred_at,
        "writer_id": writer_id,
        "seq": seq,
        "tenant_id": tenant_id,
        "api_key_id": api_key_id,
        "end_user_id": end_user_id,
        "conversation_id": None,
        "context": "api",
        "kind": kind,
        "status": status,
        "provider": "simulated",
        "model": model,
        "input_tokens": input_tokens,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": output_tokens,
        "reasoning_tokens": 0,
        "tool_calls": 0,
        "credits": Decimal(credits),
        "provider_cost_usd": Decimal(cost),
        "latency_ms": 5,
        "usage_estimated": False,
        "embedding_tokens": embedding_tokens,
        "error_code": None,
        "event_date": occurred_at.astimezone(UTC).date(),
    }


@dataclass
class EventLog:
    """Assigns dense seqs per writer and writes files the way the serving writer names them."""

    events_dir: Path
    next_seq: dict[str, int] = field(default_factory=dict)

    def number(self, events: list[dict]) -> list[dict]:
        for e in events:
            seq = self.next_seq.get(e["writer_id"], 1)
            e["seq"] = seq
            self.next_seq[e["writer_id"]] = seq + 1
        return events

    def write(self, events: list[dict], *, numbered: bool = False) -> list[Path]:
        """One file per (event_date, writer) group."""
        if not numbered:
            self.number(events)
        paths = []
        groups: dict[tuple, list[dict]] = {}
        for e in events:
            groups.setdefault((e["event_date"], e["writer_id"]), []).append(e)
        for (day, writer), rows in sorted(groups.items()):
            rows.sort(key=lambda r: r["seq"])
            folder = self.events_dir / f"event_date={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{writer}-{rows[0]['seq']}-{rows[-1]['seq']}.parquet"
            pq.write_table(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), path)
            paths.append(path)
        return paths


def make_settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(data_dir=data_dir)


def seed(settings: Settings) -> dict:
    """Tenants on several plans with a month and a half of usage; returns what tests need to know."""
    store = Store(settings.metadata_url)
    created = datetime(2026, 10, 15, 9, 30, tzinfo=UTC)
    team, _, _ = store.create_tenant("Team Co", "team", at=created, webhook_url=None)
    pro, _, _ = store.create_tenant("Pro Co", "pro", at=created)
    credits, _, _ = store.create_tenant("Credits Co", "credits_professional", at=created)
    payg, _, _ = store.create_tenant("Payg Co", "payg", at=created)
    # A mid-month upgrade: pro -> team on Oct 31 12:00 (pro's period Oct 15 - Nov 15).
    store.assign_plan(pro.tenant_id, "team", datetime(2026, 10, 31, 12, 0, tzinfo=UTC))
    store.add_topup(pro.tenant_id, "tokens", 10000, Decimal("2.99"), granted_at=datetime(2026, 10, 20, tzinfo=UTC))
    store.add_credit_grant(team.tenant_id, Decimal("5.00"), granted_at=created, priority=1, reason="welcome")
    store.add_credit_grant(
        team.tenant_id,
        Decimal("100.00"),
        granted_at=created,
        priority=0,
        reason="promo",
        expires_at=datetime(2026, 12, 31, tzinfo=UTC),
    )
    log = EventLog(settings.events_dir)
    events = []
    day = created.replace(hour=0, minute=0, second=0, microsecond=0)
    n = 0
    while day < AS_OF.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1):
        for hour in (1, 9, 17):
            at = day + timedelta(hours=hour, minutes=n % 60)
            if at > AS_OF:
                break
            n += 1
            events.append(
                event(
                    team.tenant_id,
                    at,
                    input_tokens=20000,
                    output_tokens=5000 + n,
                    credits="1",
                    cost="0.0031",
                    end_user_id=f"u{n % 3}",
                    writer_id="w1",
                )
            )
            events.append(
                event(
                    pro.tenant_id,
                    at,
                    input_tokens=400,
                    output_tokens=300,
                    cost="0.0002",
                    credits="3",
                    model="gpt-4o",
                    end_user_id="p1",
                    writer_id="w2",
                )
            )
            events.append(
                event(credits.tenant_id, at, input_tokens=10, output_tokens=10, credits="111.5", writer_id="w1")
            )
            events.append(
                event(
                    payg.tenant_id,
                    at,
                    input_tokens=1000,
                    output_tokens=1000,
                    cost="0.000123457",
                    credits="1",
                    writer_id="w2",
                )
            )
            events.append(
                event(
                    team.tenant_id,
                    at,
                    kind="embedding",
                    embedding_tokens=300,
                    credits="0.1",
                    cost="0.00001",
                    writer_id="w1",
                )
            )
            events.append(event(team.tenant_id, at, status="rejected", input_tokens=50, writer_id="w2"))
        day += timedelta(days=1)
    log.write(events)
    # A duplicated file (a retried roll): the same events again under another name.
    first = sorted(settings.events_dir.glob("*/*.parquet"))[0]
    (first.parent / f"dup-{first.name}").write_bytes(first.read_bytes())
    store.engine.dispose()
    return {
        "team": team.tenant_id,
        "pro": pro.tenant_id,
        "credits": credits.tenant_id,
        "payg": payg.tenant_id,
        "log": log,
        "events": events,
    }
