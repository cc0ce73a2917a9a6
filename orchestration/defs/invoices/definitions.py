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
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def invoice_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Daily at 01:00: bill every billing month that ended before today. Tenants' months start on their
    anchor day, so each is invoiced the day after it ends; the run on the 1st bills the month before."""
    today = context.scheduled_execution_time.replace(hour=0, minute=0, second=0, microsecond=0)
    ended_before = today.isoformat()
    config = {"ended_before": ended_before}
    return dg.RunRequest(
        run_key=f"invoices_{today:%Y-%m-%d}",
        run_config={"ops": {"invoice_documents": {"config": config}, "stripe_sync": {"config": config}}},
        tags={"chatmeter/invoices_ended_before": ended_before},
    )


defs = dg.Definitions(assets=[invoice_documents], jobs=[invoice_job], schedules=[invoice_schedule])
