-- What each plan segment metered: every event of the tenant that occurred in [segment_start, segment_end).

with

segments as (

    select * from {{ ref('int_plan_segments') }}

),

events as (

    select * from {{ ref('stg_events') }}

),

usage as (

    select
        segments.segment_id,
        sum(events.metered_tokens) as tokens,
        sum(events.metered_requests) as requests,
        sum(events.metered_embedding_tokens) as embedding_tokens,
        sum(events.metered_credits) as credits,
        sum(events.billable_cost_usd) as billable_cost_usd
    from segments
    join events
        on events.tenant_id = segments.tenant_id
        and events.occurred_at >= segments.segment_start
        and events.occurred_at < segments.segment_end
    group by 1

),

final as (

    select
        segments.segment_id,
        segments.invoice_id,
        segments.tenant_id,
        cast(coalesce(usage.tokens, 0) as decimal(38, 6)) as tokens,
        cast(coalesce(usage.requests, 0) as decimal(38, 6)) as requests,
        cast(coalesce(usage.embedding_tokens, 0) as decimal(38, 6)) as embedding_tokens,
        cast(coalesce(usage.credits, 0) as decimal(38, 6)) as credits,
        cast(coalesce(usage.billable_cost_usd, 0) as decimal(38, 9)) as billable_cost_usd
    from segments
    left join usage using (segment_id)

)

select * from final
