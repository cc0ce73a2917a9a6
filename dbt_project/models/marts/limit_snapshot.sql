-- Usage in the current windows (as of the run) per tenant, end user and key, per meter and window, with the
-- hard limit of the tenant's current plan. Counts only events up to the watermark (int_snapshot_events).

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

windows as (

    select tenant_id, plan_id, catalog_version_id, 'day' as window_kind, day_start as window_start,
        day_end as window_end
    from tenants
    union all
    select tenant_id, plan_id, catalog_version_id, 'month', month_start, month_end
    from tenants

),

event_meters as (

    unpivot (
        select
            tenant_id, api_key_id, end_user_id, occurred_at,
            cast(metered_tokens as decimal(38, 6)) as tokens,
            cast(metered_requests as decimal(38, 6)) as requests,
            cast(metered_embedding_tokens as decimal(38, 6)) as embedding_tokens,
            cast(metered_credits as decimal(38, 6)) as credits
        from {{ ref('int_snapshot_events') }}
    )
    on tokens, requests, embedding_tokens, credits
    into name meter value quantity

),

scoped as (

    select tenant_id, 'tenant' as scope, tenant_id as scope_id, meter, occurred_at, quantity from event_meters
    union all
    -- Calls naming no end user share one '' bucket, and widget calls (no API key) one '' key: as the API counts.
    select tenant_id, 'end_user', coalesce(end_user_id, ''), meter, occurred_at, quantity from event_meters
    union all
    select tenant_id, 'key', coalesce(api_key_id, ''), meter, occurred_at, quantity from event_meters

),

usage as (

    select
        windows.tenant_id,
        scoped.scope,
        scoped.scope_id,
        scoped.meter,
        windows.window_kind,
        sum(scoped.quantity) as used
    from scoped
    join windows
        on windows.tenant_id = scoped.tenant_id
        and scoped.occurred_at >= windows.window_start
        and scoped.occurred_at < windows.window_end
    where scoped.quantity > 0
    group by all

),

plan_limits as (

    select windows.tenant_id, limits.meter, limits.window_kind, limits.scope, limits.hard, limits.included
    from windows
    join {{ ref('stg_catalog_limits') }} as limits
        on limits.catalog_version_id = windows.catalog_version_id
        and limits.plan_id = windows.plan_id
        and limits.window_kind = windows.window_kind

),

keys as (

    select tenant_id, scope, scope_id, meter, window_kind from usage
    union
    select tenant_id, 'tenant', tenant_id, meter, window_kind from plan_limits where scope = 'tenant'

),

final as (

    select
        keys.tenant_id,
        keys.scope,
        keys.scope_id,
        keys.meter,
        keys.window_kind as "window",
        windows.window_start,
        windows.window_end,
        cast(coalesce(usage.used, 0) as decimal(38, 6)) as used,
        cast(plan_limits.hard as decimal(38, 6)) as "limit",
        cast(case when plan_limits.hard is not null
            then greatest(plan_limits.hard - coalesce(usage.used, 0), 0) end as decimal(38, 6)) as remaining,
        -- The plan's allowance (alerts use it where the limit is soft: overage is billed past it).
        cast(plan_limits.included as decimal(38, 6)) as included
    from keys
    join windows using (tenant_id, window_kind)
    left join usage using (tenant_id, scope, scope_id, meter, window_kind)
    left join plan_limits using (tenant_id, scope, meter, window_kind)

)

select * from final
