with

charges as (

    select * from {{ ref('int_invoice_charges') }}

),

credits as (

    select
        allocations.invoice_id,
        allocations.tenant_id,
        'credit' as kind,
        cast(null as varchar) as meter,
        'Credit grant ' || allocations.grant_id
            || case when coalesce(grants.reason, '') <> '' then ': ' || grants.reason else '' end as description,
        cast(1 as decimal(38, 9)) as quantity,
        cast(-allocations.consumed as decimal(38, 12)) as unit_price,
        cast(-allocations.consumed as decimal(18, 2)) as amount,
        50 as line_group,
        cast(allocations.grant_rank as varchar) as sort_key
    from {{ ref('int_credit_allocations') }} as allocations
    left join {{ ref('stg_credit_grants') }} as grants using (grant_id)

),

unioned as (

    select
        invoice_id, tenant_id, kind, meter, description, quantity, unit_price, amount, line_group,
        strftime(sort_at, '%Y%m%d%H%M%S%f') || coalesce(meter, '') as sort_key
    from charges
    union all
    select * from credits

),

final as (

    select
        invoice_id || '-' || lpad(cast(row_number() over (
            partition by invoice_id order by line_group, sort_key, description
        ) as varchar), 3, '0') as invoice_line_id,
        invoice_id,
        tenant_id,
        cast(row_number() over (
            partition by invoice_id order by line_group, sort_key, description
        ) as integer) as line_number,
        kind,
        meter,
        description,
        quantity,
        unit_price,
        amount
    from unioned

)

select * from final
