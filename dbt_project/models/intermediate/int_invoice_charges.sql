-- Every invoice line before credits: plan fee (or proration by seconds), usage charges, top-ups.
-- Each amount is rounded once, half-even, to the cent.

with

segments as (

    select * from {{ ref('int_plan_segments') }}

),

usage as (

    select * from {{ ref('int_segment_usage') }}

),

usage_by_meter as (

    unpivot usage
    on tokens, requests, embedding_tokens, credits
    into name meter value quantity

),

fee_lines as (

    select
        invoice_id,
        tenant_id,
        case when segments_in_period = 1 then 'plan_fee' else 'proration' end as kind,
        cast(null as varchar) as meter,
        case
            when segments_in_period = 1 then plan_name || ' plan, monthly fee'
            else plan_name || ' plan, ' || strftime(segment_start, '%Y-%m-%d %H:%M:%S')
                || ' to ' || strftime(segment_end, '%Y-%m-%d %H:%M:%S') || ' UTC, prorated by seconds ('
                || segment_seconds || ' of ' || period_seconds || ')'
        end as description,
        case
            when segments_in_period = 1 then cast(1 as decimal(38, 9))
            else cast(cast(segment_seconds as hugeint) * 1000000000 // period_seconds as decimal(38, 0)) * 0.000000001
        end as quantity,
        monthly_fee as unit_price,
        case
            when segments_in_period = 1 then {{ round_cents('monthly_fee') }}
            else {{ prorate_cents('monthly_fee', 'segment_seconds', 'period_seconds') }}
        end as amount,
        10 as line_group,
        segment_start as sort_at
    from segments

),

overage_quantities as (

    select
        segments.invoice_id,
        segments.tenant_id,
        segments.segment_id,
        segments.segment_start,
        segments.catalog_version_id,
        segments.plan_id,
        overage.meter,
        overage.charge_model,
        overage.unit_price,
        overage.package_size,
        overage.package_price,
        overage.flat_amount,
        usage_by_meter.quantity as used,
        coalesce(limits.included, 0) as included,
        greatest(usage_by_meter.quantity - coalesce(limits.included, 0), 0) as overage_units
    from segments
    join {{ ref('stg_catalog_overage') }} as overage
        on overage.catalog_version_id = segments.catalog_version_id
        and overage.plan_id = segments.plan_id
        and overage.window_kind = 'month'
    join usage_by_meter
        on usage_by_meter.segment_id = segments.segment_id
        and usage_by_meter.meter = overage.meter
    left join {{ ref('stg_catalog_limits') }} as limits
        on limits.catalog_version_id = segments.catalog_version_id
        and limits.plan_id = segments.plan_id
        and limits.meter = overage.meter
        and limits.window_kind = 'month'
        and limits.scope = 'tenant'

),

tiered as (

    -- graduated: each tier prices the overage units inside it; volume: the tier the overage falls in
    -- prices all of it.
    select
        q.segment_id,
        q.meter,
        sum(
            case
                when q.charge_model = 'graduated'
                    and least(q.overage_units, coalesce(tiers.up_to, q.overage_units)) > tiers.lower_bound
                    then (least(q.overage_units, coalesce(tiers.up_to, q.overage_units)) - tiers.lower_bound)
                        * tiers.unit_price + tiers.flat_fee
                when q.charge_model = 'volume'
                    and q.overage_units > tiers.lower_bound
                    and (tiers.up_to is null or q.overage_units <= tiers.up_to)
                    then q.overage_units * tiers.unit_price + tiers.flat_fee
                else 0
            end
        ) as tier_amount,
        max(case
            when q.charge_model = 'volume' and q.overage_units > tiers.lower_bound
                and (tiers.up_to is null or q.overage_units <= tiers.up_to) then tiers.unit_price
        end) as volume_unit_price
    from overage_quantities as q
    join {{ ref('stg_catalog_overage_tiers') }} as tiers
        on tiers.catalog_version_id = q.catalog_version_id
        and tiers.plan_id = q.plan_id
        and tiers.meter = q.meter
    where q.charge_model in ('graduated', 'volume')
    group by 1, 2

),

overage_amounts as (

    select
        q.*,
        case when q.charge_model = 'package' then {{ ceil_div('q.overage_units', 'q.package_size') }}
             else q.overage_units end as billed_quantity,
        case q.charge_model
            when 'flat' then q.flat_amount
            when 'per_unit' then q.unit_price
            when 'package' then q.package_price
            when 'volume' then tiered.volume_unit_price
        end as billed_unit_price,
        case q.charge_model
            when 'flat' then q.flat_amount
            when 'per_unit' then q.overage_units * q.unit_price
            when 'package' then {{ ceil_div('q.overage_units', 'q.package_size') }} * q.package_price
            else tiered.tier_amount
        end as raw_amount
    from overage_quantities as q
    left join tiered using (segment_id, meter)
    where q.overage_units > 0

),

overage_lines as (

    select
        invoice_id,
        tenant_id,
        'overage' as kind,
        meter,
        meter || ' beyond the ' || cast(cast(included as decimal(38, 0)) as varchar) || ' included ('
            || charge_model || case when charge_model = 'package' then ', packages of ' || package_size else '' end
            || ')' as description,
        cast(billed_quantity as decimal(38, 9)) as quantity,
        billed_unit_price as unit_price,
        {{ round_cents('raw_amount') }} as amount,
        20 as line_group,
        segment_start as sort_at
    from overage_amounts

),

cost_plus_lines as (

    select
        segments.invoice_id,
        segments.tenant_id,
        'overage' as kind,
        cast(null as varchar) as meter,
        'Usage at provider cost (USD ' || cast(usage.billable_cost_usd as varchar) || ') times the margin '
            || cast(segments.margin as varchar) as description,
        usage.billable_cost_usd as quantity,
        segments.margin as unit_price,
        {{ round_cents('usage.billable_cost_usd * segments.margin') }} as amount,
        30 as line_group,
        segments.segment_start as sort_at
    from segments
    join usage using (segment_id)
    where segments.pricing = 'cost_plus' and usage.billable_cost_usd > 0

),

topup_lines as (

    select
        periods.invoice_id,
        periods.tenant_id,
        'topup' as kind,
        topups.meter,
        'Top-up of ' || topups.units || ' ' || topups.meter || ' (' || topups.topup_id || ')' as description,
        cast(1 as decimal(38, 9)) as quantity,
        topups.amount as unit_price,
        {{ round_cents('topups.amount') }} as amount,
        40 as line_group,
        topups.granted_at as sort_at
    from {{ ref('int_billing_periods') }} as periods
    join {{ ref('stg_topups') }} as topups
        on topups.tenant_id = periods.tenant_id
        and topups.granted_at >= periods.period_start
        and topups.granted_at < periods.period_end

),

unioned as (

    select * from fee_lines
    union all
    select * from overage_lines
    union all
    select * from cost_plus_lines
    union all
    select * from topup_lines

),

final as (

    select
        invoice_id,
        tenant_id,
        kind,
        meter,
        description,
        cast(quantity as decimal(38, 9)) as quantity,
        cast(unit_price as decimal(38, 12)) as unit_price,
        cast(amount as decimal(18, 2)) as amount,
        line_group,
        sort_at
    from unioned

)

select * from final
