import dagster as dg

from orchestration.defs.stripe_sync.assets import stripe_sync

defs = dg.Definitions(assets=[stripe_sync])
