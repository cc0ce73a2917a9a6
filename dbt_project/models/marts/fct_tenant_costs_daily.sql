-- A day no plan change cuts lies whole in one segment (its pricing and margin) and is read from
-- int_tenant_daily_usage; a day a plan change cuts is priced event by event (int_plan_change_day_events).

with

segments as (

    select * from {{ ref('int_plan_segments') }}

),

whole_days as (

    select
        days.usage_date,
        days.tenant_id,
        days.billable_cost_usd as provider_cost_usd,
        case when segments.pricing = 'cost_plus' then days.billable_cost_usd * segments.margin else 0 end
            as cost_plus_billed_usd,
        days.tokens,
        days.requests
    from {{ ref('int_tenant_daily_usage') }} as days
    left join segments
        on segments.tenant_id = days.tenant_id
        and cast(days.usage_date as timestamptz) >= segments.segment_start
        and cast(days.usage_date as timestamptz) < segments.segment_end
    anti join {{ ref('int_plan_change_days') }} as cut
        on cut.tenant_id = days.tenant_id and cut.usage_date = days.usage_date

),

cut_days as (

    select
        events.usage_date,
        events.tenant_id,
        sum(events.billable_cost_usd) as provider_cost_usd,
        sum(case when segments.pricing = 'cost_plus' then events.billable_cost_usd * segments.margin else 0 end)
            as cost_plus_billed_usd,
        sum(events.metered_tokens) as tokens,
        sum(events.metered_requests) as requests
    from {{ ref('int_plan_change_day_events') }} as events
    left join segments
        on segments.tenant_id = events.tenant_id
        and events.occurred_at >= segments.segment_start
        and events.occurred_at < segments.segment_end
    group by all

),

daily as (

    select * from whole_days
    union all
    select * from cut_days

),

final as (

    select
        usage_date,
        tenant_id,
        cast(provider_cost_usd as decimal(38, 9)) as provider_cost_usd,
        cast(cost_plus_billed_usd as decimal(38, 9)) as cost_plus_billed_usd,
        cast(cost_plus_billed_usd - provider_cost_usd as decimal(38, 9)) as usage_gross_margin_usd,
        cast(tokens as bigint) as tokens,
        cast(requests as bigint) as requests
    from daily

)

select * from final
