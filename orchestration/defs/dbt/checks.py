"""Reconciliation checks across layers: the log vs staging, invoices vs their lines, snapshot vs daily marts."""

import dagster as dg

from orchestration.resources import ChatmeterResource, dbt_env, event_files
from orchestration.warehouse import connect


@dg.asset_check(asset="stg_events", description="Distinct events in the Parquet log == rows in stg_events.")
def events_in_log_equal_staging(chatmeter: ChatmeterResource) -> dg.AssetCheckResult:
    settings = chatmeter.settings()
    with dbt_env(settings), connect(settings) as con:
        raw = con.execute(
            f"select count(distinct event_id) from read_parquet('{event_files(settings)}', "
            "union_by_name = true, hive_partitioning = false)"
        ).fetchall()[0][0]
        staged = con.execute("select count(*) from stg_events").fetchall()[0][0]
    return dg.AssetCheckResult(passed=raw == staged, metadata={"log_events": raw, "staged_events": staged})


@dg.asset_check(asset="invoices", description="Every invoice's total == the sum of its lines' amounts.")
def invoice_totals_equal_lines(chatmeter: ChatmeterResource) -> dg.AssetCheckResult:
    with connect(chatmeter.settings()) as con:
        bad = con.execute(
            "select i.invoice_id from invoices i left join (select invoice_id, sum(amount) as s from invoice_lines "
            "group by 1) l using (invoice_id) where i.total <> coalesce(l.s, 0) "
            "or i.subtotal - i.credits_applied <> i.total"
        ).fetchall()
        n = con.execute("select count(*) from invoices").fetchall()[0][0]
    return dg.AssetCheckResult(passed=not bad, metadata={"invoices": n, "mismatched": [b[0] for b in bad][:20]})


@dg.asset_check(
    asset="limit_snapshot",
    description="Tenant-scope day-window usage in the snapshot == fct_daily_usage for that day (events up to "
    "the watermark; a snapshot above the daily mart is an error, below it means events past a gap or after "
    "the daily run).",
)
def snapshot_usage_equals_daily(chatmeter: ChatmeterResource) -> dg.AssetCheckResult:
    with connect(chatmeter.settings()) as con:
        day = con.execute("""select max(window_start)::date from limit_snapshot where "window" = 'day'""").fetchall()[
            0
        ][0]
        built = con.execute("select count(*) from fct_daily_usage where usage_date = ?", [day]).fetchall()[0][0]
        if day is None or not built:
            return dg.AssetCheckResult(
                passed=True, metadata={"skipped": "the daily model has not processed the snapshot's day yet"}
            )
        rows = con.execute(
            """
            with daily as (
                unpivot (
                    select tenant_id, usage_date,
                        sum(tokens)::decimal(38, 6) as tokens, sum(requests)::decimal(38, 6) as requests,
                        sum(embedding_tokens)::decimal(38, 6) as embedding_tokens,
                        sum(credits)::decimal(38, 6) as credits
                    from fct_daily_usage group by all
                ) on tokens, requests, embedding_tokens, credits into name meter value used
            )
            select s.tenant_id, s.meter, s.used, coalesce(d.used, 0) as daily_used
            from limit_snapshot s
            left join daily d
                on d.tenant_id = s.tenant_id and d.meter = s.meter
                and d.usage_date = cast(s.window_start as date)
            where s.scope = 'tenant' and s."window" = 'day' and s.used <> coalesce(d.used, 0)
            """
        ).fetchall()
    above = [r for r in rows if r[2] > r[3]]
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.ERROR if above else dg.AssetCheckSeverity.WARN,
        metadata={"day": str(day), "mismatches": len(rows), "snapshot_above_daily": len(above)},
    )


checks = [events_in_log_equal_staging, invoice_totals_equal_lines, snapshot_usage_equals_daily]
