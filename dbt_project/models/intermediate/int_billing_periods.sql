-- Every billing month of every tenant, from the one holding its first plan assignment, creation or event
-- (its first day of usage: months start at midnight) to the one holding `as_of`. Billing months run from
-- 00:00 UTC on the anchor day (chatmeter/windows.py).

with

tenants as (

    select * from {{ ref('stg_tenants') }}

),

first_seen as (

    select
        tenants.tenant_id,
        tenants.anchor_day,
        least(
            tenants.created_at,
            coalesce((select min(a.effective_from) from {{ ref('stg_plan_assignments') }} as a
                      where a.tenant_id = tenants.tenant_id), tenants.created_at),
            coalesce((select cast(min(u.usage_date) as timestamptz) from {{ ref('int_tenant_daily_usage') }} as u
                      where u.tenant_id = tenants.tenant_id), tenants.created_at)
        ) as first_at
    from tenants

),

bounds as (

    select
        tenant_id,
        anchor_day,
        {{ billing_month_index('first_at', 'anchor_day') }} as first_index,
        {{ billing_month_index(as_of(), 'anchor_day') }} as last_index
    from first_seen

),

periods as (

    select
        bounds.tenant_id,
        bounds.anchor_day,
        cast(month_index as bigint) as month_index,
        {{ anchored_start('month_index', 'bounds.anchor_day') }} as period_start,
        {{ anchored_start('month_index + 1', 'bounds.anchor_day') }} as period_end
    from bounds,
        lateral (select unnest(generate_series(bounds.first_index, bounds.last_index)) as month_index)

),

final as (

    select
        'inv_' || tenant_id || '_' || strftime(period_start, '%Y-%m') as invoice_id,
        tenant_id,
        strftime(period_start, '%Y-%m') as period,
        month_index,
        row_number() over (partition by tenant_id order by month_index) as period_number,
        period_start,
        period_end,
        cast(epoch(period_end) - epoch(period_start) as bigint) as period_seconds
    from periods

)

select * from final
