-- Usage in the current windows (as of the run) per tenant, end user and key, per meter and window, with the
-- hard limit of the tenant's current plan. Counts only events up to the watermark (snapshot_watermarks), and
-- end users only of tenants whose plan limits them (end_users_counted: the API bounds the others' by the
-- tenant's count, should their plan change before the next snapshot).

with

tenants as (

    select * from {{ ref('int_current_plans') }}

),

windows as (

    select tenant_id, plan_id, catalog_version_id, 'day' as window_kind, day_start as window_start,
        day_end as window_end
    from tenants
    union all
    select tenant_id, plan_id, catalog_version_id, 'month', month_start, month_end
    from tenants

),

-- End users: only for the meters and windows a plan of the catalog in force limits per end user, the only
-- end-user counts the API consults (int_end_user_daily_usage holds the days they need).
end_user_limits as (

    select distinct meter, window_kind
    from {{ ref('stg_catalog_limits') }}
    where scope = 'end_user' and catalog_version_id in (select catalog_version_id from tenants)

),

-- Windows are whole UTC days, so a window's usage is its days, per key in fct_daily_usage and per end user in
-- int_end_user_daily_usage, less the events above the watermark the API counts live
-- (int_events_above_watermark). Widget calls (no API key) share one '' key, and calls naming no end user one
-- '' end user, as the API counts them.
day_bounds as (

    select tenant_id, window_kind, cast(window_start as date) as first_day, cast(window_end as date) as end_day
    from windows

),

counted as (

    select tenant_id, 'key' as scope, api_key_id as scope_id, usage_date, tokens, requests, embedding_tokens,
        credits
    from {{ ref('fct_daily_usage') }}
    where usage_date >= (select min(first_day) from day_bounds)
        and usage_date < (select max(end_day) from day_bounds)
    union all
    select tenant_id, 'end_user', end_user_id, usage_date, tokens, requests, embedding_tokens, credits
    from {{ ref('int_end_user_daily_usage') }}
    union all
    select above.tenant_id, scopes.scope, if(scopes.scope = 'key', above.api_key_id, above.end_user_id),
        above.usage_date, -above.metered_tokens, -above.metered_requests, -above.metered_embedding_tokens,
        -above.metered_credits
    from {{ ref('int_events_above_watermark') }} as above, (values ('key'), ('end_user')) as scopes (scope)
    where scopes.scope = 'key' or above.tenant_id in (select tenant_id from tenants where limits_end_users)

),

in_windows as (

    select
        day_bounds.tenant_id,
        day_bounds.window_kind,
        counted.scope,
        coalesce(counted.scope_id, '') as scope_id,
        sum(counted.tokens) as tokens,
        sum(counted.requests) as requests,
        sum(counted.embedding_tokens) as embedding_tokens,
        sum(counted.credits) as credits
    from counted
    join day_bounds
        on day_bounds.tenant_id = counted.tenant_id
        and counted.usage_date >= day_bounds.first_day
        and counted.usage_date < day_bounds.end_day
    group by all

),

scoped as (

    select tenant_id, window_kind, 'tenant' as scope, tenant_id as scope_id,
        sum(tokens) as tokens, sum(requests) as requests, sum(embedding_tokens) as embedding_tokens,
        sum(credits) as credits
    from in_windows
    where scope = 'key'
    group by tenant_id, window_kind
    union all
    select * from in_windows

),

usage as (

    select tenant_id, scope, scope_id, meter, window_kind, used
    from (
        unpivot (
            select tenant_id, window_kind, scope, scope_id,
                cast(tokens as decimal(38, 6)) as tokens,
                cast(requests as decimal(38, 6)) as requests,
                cast(embedding_tokens as decimal(38, 6)) as embedding_tokens,
                cast(credits as decimal(38, 6)) as credits
            from scoped
        )
        on tokens, requests, embedding_tokens, credits
        into name meter value used
    ) as unpivoted
    -- Meters are never negative: a sum of zero means no usage (no row), as for an event metering nothing.
    where used > 0
        and (scope <> 'end_user' or exists (
            select 1 from end_user_limits as limited
            where limited.meter = unpivoted.meter and limited.window_kind = unpivoted.window_kind
        ))

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

    -- Every usage row, and a tenant-scope row for each limit of the plan with no usage yet.
    select tenant_id, scope, scope_id, meter, window_kind, used from usage
    union all
    select tenant_id, 'tenant', tenant_id, meter, window_kind, 0 from plan_limits
    where scope = 'tenant'
        and not exists (
            select 1 from usage
            where usage.tenant_id = plan_limits.tenant_id and usage.scope = 'tenant'
                and usage.meter = plan_limits.meter and usage.window_kind = plan_limits.window_kind
        )

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
        cast(keys.used as decimal(38, 6)) as used,
        cast(plan_limits.hard as decimal(38, 6)) as "limit",
        cast(case when plan_limits.hard is not null
            then greatest(plan_limits.hard - keys.used, 0) end as decimal(38, 6)) as remaining,
        -- The plan's allowance (alerts use it where the limit is soft: overage is billed past it).
        cast(plan_limits.included as decimal(38, 6)) as included,
        tenants.limits_end_users as end_users_counted
    from keys
    join windows using (tenant_id, window_kind)
    join tenants using (tenant_id)
    left join plan_limits using (tenant_id, scope, meter, window_kind)

)

select * from final
