-- Usage per tenant, end user and UTC day, for what limit_snapshot's end-user counts need: the tenants whose plan
-- limits end users (int_current_plans), today, or from a month back when a plan limits end users per month
-- (billing months are at most 31 days). fct_daily_usage has no end users (they would multiply its rows by
-- theirs); this reads the log files it read for those days, so both count the same events.
-- depends_on: {{ ref('stg_catalog_limits') }}

{%- set today = as_of_day() %}
{%- set first_day = today %}
{%- if execute %}
    {%- set monthly = run_query(
        "select count(*) from " ~ ref('stg_catalog_limits') ~ " where scope = 'end_user' and window_kind = 'month'"
    ) %}
    {%- if monthly.rows[0][0] > 0 %}
        {%- set first_day = today - modules.datetime.timedelta(days=31) %}
    {%- endif %}
{%- endif %}
{%- set days = "between cast('" ~ first_day ~ "' as date) and cast('" ~ today ~ "' as date)" %}

with

{{ log_files('usage_date ' ~ days) }},

-- Literal dates, so that DuckDB skips the other days' files. A copy of an event has its tenant.
{{ staged_events(
    read_log_files(seen_log_files('usage_date ' ~ days)),
    where='event_date ' ~ days ~ ' and tenant_id in (select tenant_id from ' ~ ref('int_current_plans')
        ~ ' where limits_end_users)',
    files='files',
) }},

final as (

    select
        usage_date,
        tenant_id,
        end_user_id,
        cast(sum(metered_tokens) as bigint) as tokens,
        cast(sum(metered_requests) as bigint) as requests,
        cast(sum(metered_embedding_tokens) as bigint) as embedding_tokens,
        cast(sum(metered_credits) as decimal(38, 6)) as credits
    from renamed
    group by all

)

select * from final
