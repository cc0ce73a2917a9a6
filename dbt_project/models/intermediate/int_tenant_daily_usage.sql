{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='usage_date',
        on_schema_change='append_new_columns',
        tags=['daily'],
    )
}}

-- Usage per tenant and UTC day (from fct_daily_usage, for the run's days like it): what billing and costs
-- read for every whole day.

select
    usage_date,
    tenant_id,
    sum(tokens) as tokens,
    sum(requests) as requests,
    sum(embedding_tokens) as embedding_tokens,
    sum(credits) as credits,
    -- fct_daily_usage's provider cost is already that of non-rejected events.
    sum(provider_cost_usd) as billable_cost_usd
from {{ ref('fct_daily_usage') }}
where {{ log_window('usage_date') }}
group by all
