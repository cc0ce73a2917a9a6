-- Usage per tenant and UTC day (from fct_daily_usage): what billing and costs read for every whole day.

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
group by all
