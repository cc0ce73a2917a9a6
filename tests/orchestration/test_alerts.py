import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import duckdb

from chatmeter.store import Store
from orchestration.defs.alerts.assets import limit_alerts, pending_alerts
from orchestration.defs.alerts.delivery import deliver, sign, verify
from tests.orchestration.helpers import asset_metadata, resources


class Receiver:
    """A local webhook receiver; fails the first `failures` requests with a 503."""

    def __init__(self, failures: int = 0):
        self.received: list[tuple[dict, bytes]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(503)
                else:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/chatmeter"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def snapshot_table(con, rows: list[tuple]) -> None:
    """A limit_snapshot table holding (tenant, scope_id, window_start, used, limit, included) rows."""
    con.execute(
        "create table limit_snapshot (tenant_id varchar, scope varchar, scope_id varchar, meter varchar, "
        '"window" varchar, window_start timestamptz, window_end timestamptz, used decimal(38, 6), '
        '"limit" decimal(38, 6), remaining decimal(38, 6), included decimal(38, 6))'
    )
    for tenant, scope_id, start, used, limit, included in rows:
        con.execute(
            "insert into limit_snapshot values (?, 'end_user', ?, 'tokens', 'day', ?, ?, ?, ?, null, ?)",
            [tenant, scope_id, start, start + timedelta(days=1), used, limit, included],
        )


def test_thresholds_crossed_and_alert_ids():
    """Thresholds reached at 75/90/100 % of the hard limit, else the allowance; each alert's id is the first 32 hex
    digits of sha256 over its window (start in ISO 8601) and kind, as records written before hold it."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    day = datetime(2026, 11, 20, tzinfo=UTC)
    odd = datetime(2026, 11, 20, 3, 4, 5, 120, tzinfo=UTC)  # a start with microseconds: isoformat shows them
    d = Decimal
    snapshot_table(
        con,
        [
            ("t", "a", day, d(74), d(100), d(100)),
            ("t", "b", day, d(75), d(100), d(100)),
            ("t", "c", day, d("99.99"), d(100), d(100)),
            ("t", "d", odd, d(150), d(100), d(50)),
            ("t", "e", day, d(5), None, None),
            ("t", "f", day, d(90), None, d(100)),  # no hard limit: alerted against the allowance
            ("t", "g", day, d(5), d(0), d(0)),
        ],
    )
    thresholds, overruns = pending_alerts(con)
    assert overruns is None  # no forecasts yet
    got = {(r["scope_id"], r["threshold_percent"]): r["alert_id"] for r in thresholds.to_pylist()}
    assert sorted(got) == [("b", 75), ("c", 75), ("c", 90), ("d", 75), ("d", 90), ("d", 100), ("f", 75), ("f", 90)]
    for (scope_id, percent), alert_id in got.items():
        start = (odd if scope_id == "d" else day).isoformat()
        raw = f"t|end_user|{scope_id}|tokens|day|{start}|threshold_{percent}"
        assert alert_id == hashlib.sha256(raw.encode()).hexdigest()[:32]
    con.close()


def test_signature_round_trip():
    body = b'{"a": 1}'
    signature = sign("whsec_x", 1_700_000_000, body)
    assert verify("whsec_x", "1700000000", body, signature, now=1_700_000_100)
    assert not verify("whsec_y", "1700000000", body, signature, now=1_700_000_100)
    assert not verify("whsec_x", "1700000000", body, signature, now=1_700_009_999)


def test_delivery_retries_with_backoff():
    waits = []
    with Receiver(failures=2) as receiver:
        ok, attempts, _ = deliver(
            receiver.url, "whsec_x", {"alert_id": "a"}, attempts=4, backoff_s=0.1, sleep=waits.append
        )
    assert ok and attempts == 3 and waits == [0.1, 0.2] and len(receiver.received) == 1


def test_alerts_signed_and_sent_once_per_window(built_copy):
    settings, info = built_copy
    store = Store(settings.metadata_url)
    with Receiver(failures=1) as receiver:
        store.update_tenant(info["team"], webhook_url=receiver.url)
        secret = store.get_tenant(info["team"]).webhook_secret
        res = resources(settings)
        config = {"ops": {"limit_alerts": {"config": {"attempts": 3, "backoff_s": 0.01}}}}
        result = dg.materialize([limit_alerts], resources=res, run_config=config)
        assert result.success
        meta = asset_metadata(result, "limit_alerts")
        assert meta["delivered"] == len(receiver.received) > 0
        for headers, body in receiver.received:
            assert verify(secret, headers["x-chatmeter-timestamp"], body, headers["x-chatmeter-signature"])
            payload = json.loads(body)
            assert payload["tenant_id"] == info["team"]
        kinds = {(json.loads(b)["type"], json.loads(b).get("threshold_percent")) for _, b in receiver.received}
        # The team tenant's daily token limit (50k) is far exceeded today; the month is projected over.
        assert ("usage_threshold", 100) in kinds and ("projected_overrun", None) in kinds
        sent = len(receiver.received)

        again = dg.materialize([limit_alerts], resources=res, run_config=config)
        assert again.success
        assert len(receiver.received) == sent
        assert asset_metadata(again, "limit_alerts")["already_sent"] >= sent
    records = (settings.data_dir / "pipeline" / "alerts.jsonl").read_text().splitlines()
    assert len(records) == sent
    store.engine.dispose()


def test_soft_limited_plans_are_alerted_against_their_allowance(settings):
    """A monthly limit with no hard cap (overage billed) alerts at 75/90/100 % of what the plan includes."""
    from datetime import UTC, datetime
    from decimal import Decimal

    import duckdb

    store = Store(settings.metadata_url)
    with Receiver() as receiver:
        tenant, _, _ = store.create_tenant("Soft Co", "team", webhook_url=receiver.url)
        start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        con = duckdb.connect(str(settings.warehouse_path))
        con.execute(
            "create table limit_snapshot (tenant_id varchar, scope varchar, scope_id varchar, meter varchar, "
            '"window" varchar, window_start timestamptz, window_end timestamptz, used decimal(38, 6), '
            '"limit" decimal(38, 6), remaining decimal(38, 6), included decimal(38, 6))'
        )
        con.execute(
            "insert into limit_snapshot values (?, 'tenant', ?, 'tokens', 'month', ?, ?, ?, null, null, ?)",
            [tenant.tenant_id, tenant.tenant_id, start, end, Decimal(410_000), Decimal(500_000)],
        )
        con.close()
        result = dg.materialize([limit_alerts], resources=resources(settings))
        assert result.success
        payloads = [json.loads(body) for _, body in receiver.received]
    store.engine.dispose()
    assert sorted(p["threshold_percent"] for p in payloads) == [75]
    assert payloads[0]["limit"] == "500000.000000" and payloads[0]["meter"] == "tokens"
