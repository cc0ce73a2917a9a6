import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg

from chatmeter.store import Store
from orchestration.defs.alerts.assets import limit_alerts
from orchestration.defs.alerts.delivery import crossed, deliver, sign, verify
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


def test_thresholds_crossed():
    from decimal import Decimal

    assert crossed(Decimal(74), Decimal(100)) == []
    assert crossed(Decimal(75), Decimal(100)) == [75]
    assert crossed(Decimal("99.99"), Decimal(100)) == [75, 90]
    assert crossed(Decimal(150), Decimal(100)) == [75, 90, 100]
    assert crossed(Decimal(5), None) == []


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
