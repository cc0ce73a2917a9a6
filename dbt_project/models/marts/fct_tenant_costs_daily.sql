with

segments as (

    select * from {{ ref('int_plan_segments') }}

),

events as (

    select * from {{ ref('stg_events') }}

),

daily as (

    select
        events.usage_date,
        events.tenant_id,
        sum(events.billable_cost_usd) as provider_cost_usd,
        sum(case when segments.pricing = 'cost_plus' then events.billable_cost_usd * segments.margin else 0 end)
            as cost_plus_billed_usd,
        sum(events.metered_tokens) as tokens,
        sum(events.metered_requests) as requests
    from events
    left join segments
        on segments.tenant_id = events.tenant_id
        and events.occurred_at >= segments.segment_start
        and events.occurred_at < segments.segment_end
    group by all

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
