import dagster as dg

from chatmeter import store as st
from orchestration.defs.alerts.delivery import AlertLog, alert_key, crossed, deliver
from orchestration.resources import ChatmeterResource, pipeline_dir
from orchestration.warehouse import connect


class AlertConfig(dg.Config):
    attempts: int = 4
    backoff_s: float = 0.5


def pending_alerts(snapshot_rows: list[dict], forecast_rows: list[dict]) -> list[dict]:
    """Every alert the current windows call for: thresholds crossed, and projected monthly overruns."""
    out = []
    for r in snapshot_rows:
        start = r["window_start"].isoformat()
        for threshold in crossed(r["used"], r["limit"]):
            kind = f"threshold_{threshold}"
            out.append(
                dict(
                    alert_id=alert_key(r["tenant_id"], r["scope"], r["scope_id"], r["meter"], r["window"], start, kind),
                    type="usage_threshold",
                    threshold_percent=threshold,
                    tenant_id=r["tenant_id"],
                    scope=r["scope"],
                    scope_id=r["scope_id"],
                    meter=r["meter"],
                    window=r["window"],
                    window_start=start,
                    window_end=r["window_end"].isoformat(),
                    used=str(r["used"]),
                    limit=str(r["limit"]),
                )
            )
    for f in forecast_rows:
        if not f["will_exceed"]:
            continue
        start = f["window_start"].isoformat()
        out.append(
            dict(
                alert_id=alert_key(f["tenant_id"], "tenant", f["tenant_id"], f["meter"], "month", start, "projected"),
                type="projected_overrun",
                tenant_id=f["tenant_id"],
                scope="tenant",
                scope_id=f["tenant_id"],
                meter=f["meter"],
                window="month",
                window_start=start,
                window_end=f["window_end"].isoformat(),
                used=str(f["used"]),
                limit=str(f["limit"]),
                projected=str(round(f["projected"], 2)),
            )
        )
    return out


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
        # A hard limit, or else the plan's allowance: soft-limited plans are alerted as they near it too.
        snapshot = (
            con.sql(
                'select * replace (coalesce("limit", included) as "limit") from limit_snapshot '
                'where coalesce("limit", included) > 0'
            )
            .to_arrow_table()
            .to_pylist()
        )
        has_forecasts = con.execute(
            "select count(*) from information_schema.tables where table_name = 'usage_forecasts'"
        ).fetchall()[0][0]
        forecasts = con.sql("select * from usage_forecasts").to_arrow_table().to_pylist() if has_forecasts else []
    alerts = pending_alerts(snapshot, forecasts)
    record = AlertLog(pipeline_dir(settings) / "alerts.jsonl")
    done = record.delivered()
    store = st.Store(settings.metadata_url)
    tenants = {t.tenant_id: t for t in store.list_tenants()}
    store.engine.dispose()
    counts = {"delivered": 0, "failed": 0, "no_webhook": 0, "already_sent": 0}
    for alert in alerts:
        if alert["alert_id"] in done:
            counts["already_sent"] += 1
            continue
        tenant = tenants.get(alert["tenant_id"])
        if tenant is None or not tenant.webhook_url or not tenant.webhook_secret:
            counts["no_webhook"] += 1
            continue
        ok, attempts, error = deliver(
            tenant.webhook_url,
            tenant.webhook_secret,
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
    return dg.MaterializeResult(metadata={"pending": len(alerts), **counts})
