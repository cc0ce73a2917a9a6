from datetime import UTC, datetime

import dagster as dg

from orchestration.definitions import defs
from orchestration.defs.dbt.partitions import build_args, daily_partitions, dbt_vars, run_environment, window_vars
from orchestration.defs.dbt.schedules import daily_usage_schedule
from orchestration.defs.invoices.definitions import invoice_schedule


def test_definitions_load():
    # `dagster-webserver -m orchestration.definitions` (chatmeter up) needs exactly one Definitions object.
    import orchestration.definitions as module

    assert [name for name, value in vars(module).items() if isinstance(value, dg.Definitions)] == ["defs"]
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for key in [
        "metadata/tenants",
        "log/events",
        "fct_daily_usage",
        "invoices",
        "limit_snapshot",
        "limit_snapshot_file",
        "invoice_documents",
        "usage_forecasts",
        "stripe_sync",
        "limit_alerts",
        "transcript_retention",
    ]:
        assert key in keys, key
    assert {j.name for j in repo.get_all_jobs()} >= {"snapshot_job", "daily_usage_job", "warehouse_job", "invoice_job"}
    assert {s.name for s in repo.schedule_defs} == {
        "snapshot_schedule",
        "daily_usage_schedule",
        "warehouse_schedule",
        "invoice_schedule",
    }
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {"log_events_equal_daily_usage", "invoice_totals_equal_lines", "snapshot_usage_equals_daily"} <= checks
    snapshot_job = defs.resolve_job_def("snapshot_job")
    assert dg.AssetKey("limit_snapshot_file") in snapshot_job.asset_layer.selected_asset_keys
    assert daily_partitions.get_partition_keys(datetime(2026, 11, 21, 0, 15, tzinfo=UTC))[-1] == "2026-11-21"


def test_daily_usage_schedule_requests_the_day_that_ended():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 0, 15, tzinfo=UTC))
    request = daily_usage_schedule(context)
    assert request.partition_key == "2026-11-20"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2027, 1, 1, 0, 15, tzinfo=UTC))
    assert daily_usage_schedule(context).partition_key == "2026-12-31"
    assert daily_usage_schedule.cron_schedule == "15 0 * * *"


def test_invoice_schedule_bills_the_month_before():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 1, 1, 0, tzinfo=UTC))
    request = invoice_schedule(context)
    assert request.run_config["ops"]["invoice_documents"]["config"] == {"ended_before": "2026-12-01T00:00:00+00:00"}
    assert request.run_config["ops"]["stripe_sync"]["config"] == {"ended_before": "2026-12-01T00:00:00+00:00"}
    assert request.run_key == "invoices_2026-12-01"
    assert invoice_schedule.cron_schedule == "0 1 * * *"


def test_invoice_schedule_bills_mid_month_anchors_the_day_after_they_end():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 13, 1, 0, tzinfo=UTC))
    request = invoice_schedule(context)
    assert request.run_config["ops"]["invoice_documents"]["config"] == {"ended_before": "2026-12-13T00:00:00+00:00"}
    assert request.run_key == "invoices_2026-12-13"


def test_snapshot_schedule_runs_every_few_minutes():
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def("snapshot_schedule")
    assert schedule.cron_schedule == "*/5 * * * *"
    assert schedule.job_name == "snapshot_job"
    # Each run re-reads yesterday and today with the daily models, then rebuilds the snapshot.
    request = schedule(dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 0, 5, tzinfo=UTC)))
    assert request.tags["dagster/asset_partition_range_start"] == "2026-11-20"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-11-21"
    assert dg.AssetKey("fct_daily_usage") in defs.resolve_job_def("snapshot_job").asset_layer.selected_asset_keys


def test_partition_window_to_vars():
    start, end = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)
    assert window_vars(start, end) == {"min_date": "2026-11-20", "max_date": "2026-11-20"}
    assert dbt_vars("2026-11-20T12:00:00+00:00", (start, end)) == {
        "as_of": "2026-11-20T12:00:00+00:00",
        "min_date": "2026-11-20",
        "max_date": "2026-11-20",
    }
    # The run's vars reach dbt through the environment (passed as --vars they would force a full re-parse).
    assert run_environment(dbt_vars("2026-11-20T12:00:00+00:00", (start, end))) == {
        "CHATMETER_AS_OF": "2026-11-20T12:00:00+00:00",
        "CHATMETER_MIN_DATE": "2026-11-20",
        "CHATMETER_MAX_DATE": "2026-11-20",
    }
    assert run_environment({}) == {"CHATMETER_AS_OF": "", "CHATMETER_MIN_DATE": "", "CHATMETER_MAX_DATE": ""}
    assert build_args("build") == [
        "build",
        "--indirect-selection",
        "cautious",
        "--exclude-resource-type",
        "unit_test",
    ]
