-- Each tenant's plan and catalog version in force as of the run, its current day and billing month, and whether
-- that plan limits anything per end user: what limit_snapshot counts, and whose end users
-- int_end_user_daily_usage counts.

with

as_of as (

    select {{ as_of() }} as at

),

tenants as (

    select
        tenants.tenant_id,
        tenants.anchor_day,
        cast(date_trunc('day', as_of.at) as timestamptz) as day_start,
        cast(date_trunc('day', as_of.at) as timestamptz) + interval 1 day as day_end,
        {{ anchored_start(billing_month_index('as_of.at', 'tenants.anchor_day'), 'tenants.anchor_day') }}
            as month_start,
        {{ anchored_start(billing_month_index('as_of.at', 'tenants.anchor_day') ~ ' + 1', 'tenants.anchor_day') }}
            as month_end,
        coalesce(
            (select a.plan_id from {{ ref('stg_plan_assignments') }} as a
             where a.tenant_id = tenants.tenant_id and a.effective_from <= as_of.at
             order by a.effective_from desc, a.assignment_id desc limit 1),
            (select a.plan_id from {{ ref('stg_plan_assignments') }} as a
             where a.tenant_id = tenants.tenant_id
             order by a.effective_from, a.assignment_id limit 1)
        ) as plan_id,
        (select v.catalog_version_id from {{ ref('stg_catalog_versions') }} as v
         where v.in_force_from <= cast(as_of.at as date)
             and (v.effective_to is null or cast(as_of.at as date) < v.effective_to)) as catalog_version_id
    from {{ ref('stg_tenants') }} as tenants, as_of

),

final as (

    select
        *,
        exists (
            select 1 from {{ ref('stg_catalog_limits') }} as limits
            where limits.catalog_version_id = tenants.catalog_version_id
                and limits.plan_id = tenants.plan_id
                and limits.scope = 'end_user'
        ) as limits_end_users
    from tenants

)

select * from final
