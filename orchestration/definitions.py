"""The Dagster code location: every subject's definitions under orchestration/defs, merged.

Subjects are imported as modules so that `defs` is the only Definitions object at module scope.
"""

import dagster as dg

from orchestration.defs.alerts import definitions as alerts
from orchestration.defs.dbt import definitions as dbt
from orchestration.defs.forecast import definitions as forecast
from orchestration.defs.ingest import definitions as ingest
from orchestration.defs.invoices import definitions as invoices
from orchestration.defs.retention import definitions as retention
from orchestration.defs.snapshots import definitions as snapshots
from orchestration.defs.stripe_sync import definitions as stripe_sync
from orchestration.resources import pipeline_resources

SUBJECTS = (ingest, dbt, snapshots, invoices, forecast, stripe_sync, alerts, retention)

defs = dg.Definitions.merge(
    *(subject.defs for subject in SUBJECTS),
    dg.Definitions(resources=pipeline_resources()),
)
