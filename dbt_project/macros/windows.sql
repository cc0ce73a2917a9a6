{#- Limit windows (chatmeter/windows.py): the UTC day, and the billing month from 00:00 UTC on the tenant's
    anchor day to the same day of the next month (that month's last day when shorter). Months are counted as
    an index year * 12 + month - 1. -#}

{% macro as_of() -%}
    {%- if run_var('as_of') -%} cast('{{ run_var("as_of") }}' as timestamptz)
    {%- else -%} cast(get_current_timestamp() as timestamptz)
    {%- endif -%}
{%- endmacro %}

{% macro month_index(ts) -%}
    (year(({{ ts }})) * 12 + month(({{ ts }})) - 1)
{%- endmacro %}

{% macro anchored_date(month_index, anchor_day) -%}
    make_date(
        cast(({{ month_index }}) // 12 as integer),
        cast(({{ month_index }}) % 12 + 1 as integer),
        cast(least({{ anchor_day }}, day(last_day(make_date(cast(({{ month_index }}) // 12 as integer), cast(({{ month_index }}) % 12 + 1 as integer), 1)))) as integer)
    )
{%- endmacro %}

{% macro anchored_start(month_index, anchor_day) -%}
    cast({{ anchored_date(month_index, anchor_day) }} as timestamptz)
{%- endmacro %}

{% macro billing_month_index(ts, anchor_day) -%}
    {#- The month index of the billing month containing ts. -#}
    (case
        when cast(({{ ts }}) as date) < {{ anchored_date(month_index(ts), anchor_day) }}
            then {{ month_index(ts) }} - 1
        else {{ month_index(ts) }}
    end)
{%- endmacro %}

{% macro as_of_day() -%}
    {#- The UTC day of the run's as_of, as a Python date: for conditions on the log's partitions, which must be
        literals for DuckDB to skip the other days' files. -#}
    {%- set at = run_var('as_of') -%}
    {%- if at -%}
        {%- set instant = modules.datetime.datetime.fromisoformat(at) -%}
        {%- if instant.tzinfo -%}
            {%- set instant = instant.astimezone(modules.pytz.utc) -%}
        {%- endif -%}
    {%- else -%}
        {%- set instant = modules.datetime.datetime.utcnow() -%}
    {%- endif -%}
    {{- return(instant.date()) -}}
{%- endmacro %}
