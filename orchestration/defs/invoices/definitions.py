import dagster as dg

from orchestration.defs.ingest.assets import EVENT_LOG
from orchestration.defs.invoices.assets import invoice_documents

invoice_job = dg.define_asset_job(
    "invoice_job",
    selection=(
        dg.AssetSelection.assets("invoice_documents").upstream().required_multi_asset_neighbors()
        - dg.AssetSelection.assets(EVENT_LOG)
    )
    | dg.AssetSelection.groups("stripe"),
)


@dg.schedule(
    job=invoice_job,
    cron_schedule="0 1 1 * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def invoice_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """On the 1st: bill the billing months that ended in the month before (and any earlier left over)."""
    first = context.scheduled_execution_time.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ended_before = first.isoformat()
    config = {"ended_before": ended_before}
    return dg.RunRequest(
        run_key=f"invoices_{first:%Y-%m}",
        run_config={"ops": {"invoice_documents": {"config": config}, "stripe_sync": {"config": config}}},
        tags={"chatmeter/invoices_ended_before": ended_before},
    )


defs = dg.Definitions(assets=[invoice_documents], jobs=[invoice_job], schedules=[invoice_schedule])
