-- The deduplicated events of the tenant-days cut by a plan change (int_plan_change_days): the only raw events
-- billing reads. Only those days' files are opened and those tenants' rows scanned (a copy of an event has its
-- tenant and day, so deduplicating within them is exact).

{%- set conditions, days = [], [] %}
{%- if execute %}
    {%- set result = run_query(
        "select distinct tenant_id, cast(usage_date as varchar) from " ~ ref('int_plan_change_days')
        ~ " order by 2, 1"
    ) %}
    {%- for row in result.rows %}
        {%- do conditions.append(
            "(event_date = cast('" ~ row[1] ~ "' as date)"
            ~ " and tenant_id = '" ~ (row[0] | replace("'", "''")) ~ "')"
        ) %}
        {%- do days.append("cast('" ~ row[1] ~ "' as date)") %}
    {%- endfor %}
{%- endif %}

with

{{ staged_events(
    read_log_files(logged_files('day in (' ~ (days | unique | join(', ')) ~ ')') if days else []),
    where='(' ~ (conditions | join(' or ') or 'false') ~ ')',
) }},

final as (

    select renamed.*
    from renamed
    semi join {{ ref('int_plan_change_days') }} as days using (tenant_id, usage_date)

)

select * from final
