import dagster as dg
import pyarrow as pa
from sqlalchemy import select

from chatmeter import store as st
from orchestration.defs.alerts.delivery import THRESHOLDS, AlertLog, deliver
from orchestration.resources import ChatmeterResource, pipeline_dir
from orchestration.warehouse import connect


class AlertConfig(dg.Config):
    attempts: int = 4
    backoff_s: float = 0.5


def _alert_id(tenant_id: str, scope: str, scope_id: str, meter: str, window: str, window_start: str, kind: str) -> str:
    """SQL for an alert's identity, one per threshold (or projected overrun) per window: the first 32 hex digits
    of sha256('<tenant>|<scope>|<scope_id>|<meter>|<window>|<window start, ISO 8601>|<kind>'). Computed in
    DuckDB so that a run compares ids with the delivery record without building every alert in Python."""
    iso = (
        f"strftime({window_start}, '%Y-%m-%dT%H:%M:%S') "
        f"|| if(epoch_us({window_start}) % 1000000 = 0, '', strftime({window_start}, '.%f')) || '+00:00'"
    )
    return f"left(sha256(concat_ws('|', {tenant_id}, {scope}, {scope_id}, {meter}, {window}, {iso}, {kind})), 32)"


_THRESHOLD_ID = _alert_id(
    "tenant_id", "scope", "scope_id", "meter", '"window"', "window_start", "'threshold_' || threshold_percent"
)
_OVERRUN_ID = _alert_id("tenant_id", "'tenant'", "tenant_id", "meter", "'month'", "window_start", "'projected'")

# A hard limit, or else the plan's allowance: soft-limited plans are alerted as they near it too. One row per
# threshold reached (percent of the limit). The redundant `"limit" > 0 or included > 0` lets DuckDB skip the
# many rows without either by their row groups' min/max, which the coalesce hides from it.
THRESHOLD_ALERTS = f"""
with windows as (
    select * replace (coalesce("limit", included) as "limit") from limit_snapshot
    where ("limit" > 0 or included > 0) and coalesce("limit", included) > 0
        and used * 100 >= coalesce("limit", included) * {min(THRESHOLDS)}
),
crossed as (
    select *, unnest(list_filter(?::integer[], lambda t: used * 100 >= "limit" * t)) as threshold_percent
    from windows
)
select {_THRESHOLD_ID} as alert_id, * from crossed
"""

OVERRUN_ALERTS = f"""
select {_OVERRUN_ID} as alert_id, * from usage_forecasts where will_exceed
"""


def pending_alerts(con) -> tuple[pa.Table, pa.Table | None]:
    """Every alert the current windows call for, with its alert_id: thresholds crossed, and projected monthly
    overruns (when the forecasts exist)."""
    thresholds = con.sql(THRESHOLD_ALERTS, params=[list(THRESHOLDS)]).to_arrow_table()
    found = con.execute("select count(*) from duckdb_tables() where table_name = 'usage_forecasts'").fetchall()
    has_forecasts = found[0][0] > 0
    overruns = con.sql(OVERRUN_ALERTS).to_arrow_table() if has_forecasts else None
    return thresholds, overruns


def threshold_alert(r: dict) -> dict:
    return dict(
        alert_id=r["alert_id"],
        type="usage_threshold",
        threshold_percent=r["threshold_percent"],
        tenant_id=r["tenant_id"],
        scope=r["scope"],
        scope_id=r["scope_id"],
        meter=r["meter"],
        window=r["window"],
        window_start=r["window_start"].isoformat(),
        window_end=r["window_end"].isoformat(),
        used=str(r["used"]),
        limit=str(r["limit"]),
    )


def overrun_alert(f: dict) -> dict:
    return dict(
        alert_id=f["alert_id"],
        type="projected_overrun",
        tenant_id=f["tenant_id"],
        scope="tenant",
        scope_id=f["tenant_id"],
        meter=f["meter"],
        window="month",
        window_start=f["window_start"].isoformat(),
        window_end=f["window_end"].isoformat(),
        used=str(f["used"]),
        limit=str(f["limit"]),
        projected=str(round(f["projected"], 2)),
    )


@dg.asset(
    group_name="alerts",
    deps=["limit_snapshot", "usage_forecasts"],
    description="Webhooks at 75/90/100% of a limit and on a projected overrun, once per window, signed "
    "(HMAC-SHA256 with timestamp), retried with backoff, recorded in <data_dir>/pipeline/alerts.jsonl.",
    pool="warehouse",
)
def limit_alerts(config: AlertConfig, chatmeter: ChatmeterResource) -> dg.MaterializeResult:
    settings = chatmeter.settings()
    with connect(settings) as con:
        thresholds, overruns = pending_alerts(con)
    record = AlertLog(pipeline_dir(settings) / "alerts.jsonl")
    done = record.delivered()
    store = st.Store(settings.metadata_url)
    t = st.tenants
    with store.engine.connect() as c:
        hooks = {
            tenant_id: (url, secret)
            for tenant_id, url, secret in c.execute(
                select(t.c.tenant_id, t.c.webhook_url, t.c.webhook_secret).where(t.c.webhook_url.is_not(None))
            )
            if url and secret
        }
    store.engine.dispose()
    counts = {"delivered": 0, "failed": 0, "no_webhook": 0, "already_sent": 0}
    pending = 0
    for table, build in ((thresholds, threshold_alert), (overruns, overrun_alert)):
        if table is None:
            continue
        pending += table.num_rows
        # Ids and tenants only, for every alert; the whole alert only for those to send.
        send = []
        ids, tenant_ids = table.column("alert_id").to_pylist(), table.column("tenant_id").to_pylist()
        for i, (alert_id, tenant_id) in enumerate(zip(ids, tenant_ids, strict=True)):
            if alert_id in done:
                counts["already_sent"] += 1
            elif tenant_id not in hooks:
                counts["no_webhook"] += 1
            else:
                send.append(i)
        for row in table.take(pa.array(send, pa.int64())).to_pylist():
            alert = build(row)
            url, secret = hooks[alert["tenant_id"]]
            if alert["alert_id"] in done:  # the same window listed twice: sent once
                counts["already_sent"] += 1
                continue
            ok, attempts, error = deliver(
                url,
                secret,
                {**alert, "sent_at": chatmeter.now().isoformat()},
                attempts=config.attempts,
                backoff_s=config.backoff_s,
            )
            status = "delivered" if ok else "failed"
            counts[status] += 1
            record.append(
                {
                    "alert_id": alert["alert_id"],
                    "status": status,
                    "attempts": attempts,
                    "error": error,
                    "at": chatmeter.now().isoformat(),
                    "alert": alert,
                }
            )
            if ok:
                done.add(alert["alert_id"])
    return dg.MaterializeResult(metadata={"pending": pending, **counts})
