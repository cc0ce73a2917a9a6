"""Reconciliation checks across layers: the log vs the daily model, invoices vs their lines, snapshot vs daily marts."""

from datetime import timedelta

import dagster as dg

from orchestration.resources import ChatmeterResource, event_files_of_days
from orchestration.warehouse import connect

# The days the daily job re-processes (yesterday, for late events, and today): older days are final, and were
# reconciled while they were recent; re-reading every day of the log each day would grow without end.
RECONCILED_DAYS = 2


@dg.asset_check(
    asset="fct_daily_usage",
    description="For yesterday and today: distinct events in the Parquet log == the events fct_daily_usage holds "
    "(fewer in the log is an error; more means events landed after the day's last run: a warning until it "
    "re-runs).",
)
def log_events_equal_daily_usage(chatmeter: ChatmeterResource) -> dg.AssetCheckResult:
    settings = chatmeter.settings()
    since = chatmeter.now().date() - timedelta(days=RECONCILED_DAYS - 1)
    with connect(settings) as con:
        rows = con.execute(
            """
            with logged as (
                select cast(cast(occurred_at as timestamptz) as date) as usage_date,
                    count(distinct event_id) as events
                from read_parquet($files, union_by_name = true, hive_partitioning = false)
                where event_date >= $since
                group by 1
            ),
            counted as (
                select usage_date, sum(events) as events from fct_daily_usage where usage_date >= $since group by 1
            )
            select usage_date, coalesce(logged.events, 0), coalesce(counted.events, 0)
            from counted full outer join logged using (usage_date)
            where coalesce(logged.events, 0) <> coalesce(counted.events, 0)
            order by 1
            """,
            {"since": since, "files": event_files_of_days(settings, since)},
        ).fetchall()
    fewer = [r for r in rows if r[1] < r[2]]
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.ERROR if fewer else dg.AssetCheckSeverity.WARN,
        metadata={
            "days_checked_from": str(since),
            "days_differing": [str(r[0]) for r in rows][:20],
            "days_with_fewer_in_log": len(fewer),
        },
    )


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


checks = [log_events_equal_daily_usage, invoice_totals_equal_lines, snapshot_usage_equals_daily]
