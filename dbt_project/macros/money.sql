{#- Money is DECIMAL end to end; DuckDB's round() is half away from zero and DECIMAL / INTEGER gives a
    DOUBLE, so invoices round with these instead. -#}

{% macro round_cents(amount) -%}
    {#- Half-even to the cent, once per invoice line. -#}
    cast(
        (case
            when ({{ amount }}) * 100 - floor(({{ amount }}) * 100) > 0.5 then floor(({{ amount }}) * 100) + 1
            when ({{ amount }}) * 100 - floor(({{ amount }}) * 100) < 0.5 then floor(({{ amount }}) * 100)
            when cast(floor(({{ amount }}) * 100) as hugeint) % 2 = 0 then floor(({{ amount }}) * 100)
            else floor(({{ amount }}) * 100) + 1
        end) * 0.01
    as decimal(18, 2))
{%- endmacro %}

{% macro prorate_cents(monthly_fee, seconds_on_plan, seconds_in_period) -%}
    {#- monthly_fee * seconds_on_plan / seconds_in_period, rounded half-even to the cent from the exact
        fraction (integer arithmetic on micro-cents: fees carry at most 6 decimals past the cent). -#}
    cast(
        (
            cast(cast(({{ monthly_fee }}) * 100000000 as hugeint) * ({{ seconds_on_plan }}) // (cast({{ seconds_in_period }} as hugeint) * 1000000) as hugeint)
            + case
                when 2 * ((cast(({{ monthly_fee }}) * 100000000 as hugeint) * ({{ seconds_on_plan }})) % (cast({{ seconds_in_period }} as hugeint) * 1000000))
                    > cast({{ seconds_in_period }} as hugeint) * 1000000 then 1
                when 2 * ((cast(({{ monthly_fee }}) * 100000000 as hugeint) * ({{ seconds_on_plan }})) % (cast({{ seconds_in_period }} as hugeint) * 1000000))
                    < cast({{ seconds_in_period }} as hugeint) * 1000000 then 0
                when (cast(({{ monthly_fee }}) * 100000000 as hugeint) * ({{ seconds_on_plan }}) // (cast({{ seconds_in_period }} as hugeint) * 1000000)) % 2 = 0 then 0
                else 1
            end
        ) * 0.01
    as decimal(18, 2))
{%- endmacro %}

{% macro ceil_div(quantity, size) -%}
    {#- ceil(quantity / size) for a non-negative DECIMAL quantity (6 decimals at most) and an integer size. -#}
    ((cast(({{ quantity }}) * 1000000 as hugeint) + cast({{ size }} as hugeint) * 1000000 - 1)
        // (cast({{ size }} as hugeint) * 1000000))
{%- endmacro %}
