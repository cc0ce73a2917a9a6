-- What each plan segment metered: every event of the tenant that occurred in [segment_start, segment_end).
-- A day no plan change cuts lies whole in one segment: its usage comes from int_tenant_daily_usage; a day a
-- plan change cuts is split by the instant of each of its events (int_plan_change_day_events).

with

segments as (

    select * from {{ ref('int_plan_segments') }}

),

whole_days as (

    select
        segments.segment_id,
        days.tokens,
        days.requests,
        days.embedding_tokens,
        days.credits,
        days.billable_cost_usd
    from segments
    join {{ ref('int_tenant_daily_usage') }} as days
        on days.tenant_id = segments.tenant_id
        and cast(days.usage_date as timestamptz) >= segments.segment_start
        and cast(days.usage_date as timestamptz) < segments.segment_end
    anti join {{ ref('int_plan_change_days') }} as cut
        on cut.tenant_id = days.tenant_id and cut.usage_date = days.usage_date

),

cut_days as (

    select
        segments.segment_id,
        events.metered_tokens as tokens,
        events.metered_requests as requests,
        events.metered_embedding_tokens as embedding_tokens,
        events.metered_credits as credits,
        events.billable_cost_usd
    from segments
    join {{ ref('int_plan_change_day_events') }} as events
        on events.tenant_id = segments.tenant_id
        and events.occurred_at >= segments.segment_start
        and events.occurred_at < segments.segment_end

),

usage as (

    select
        segment_id,
        sum(tokens) as tokens,
        sum(requests) as requests,
        sum(embedding_tokens) as embedding_tokens,
        sum(credits) as credits,
        sum(billable_cost_usd) as billable_cost_usd
    from (select * from whole_days union all select * from cut_days)
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
