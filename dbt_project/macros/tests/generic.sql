{% test non_negative(model, column_name) %}
select * from {{ model }} where {{ column_name }} < 0
{% endtest %}

{% test unique_combination(model, combination_of_columns) %}
select {{ combination_of_columns | join(', ') }}, count(*) as n
from {{ model }}
group by all
having count(*) > 1
{% endtest %}

{% test sums_match(model, column_name, to, field, key, to_key=none) %}
{#- For every key, this model's sum of column_name equals the sum of field in `to`. -#}
with ours as (
    select {{ key }} as k, sum({{ column_name }}) as total from {{ model }} group by 1
),
theirs as (
    select {{ to_key or key }} as k, sum({{ field }}) as total from {{ to }} group by 1
)
select * from ours full outer join theirs using (k)
where coalesce(ours.total, 0) <> coalesce(theirs.total, 0)
{% endtest %}

{% test between(model, column_name, min_value, max_value) %}
select * from {{ model }} where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}
