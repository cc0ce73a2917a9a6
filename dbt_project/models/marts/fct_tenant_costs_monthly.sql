with

invoices as (

    select * from {{ ref('invoices') }}

),

costs as (

    select invoice_id, sum(billable_cost_usd) as provider_cost_usd
    from {{ ref('int_segment_usage') }}
    group by 1

),

final as (

    select
        invoices.invoice_id,
        invoices.tenant_id,
        invoices.period,
        invoices.period_start,
        invoices.period_end,
        invoices.plan,
        cast(coalesce(costs.provider_cost_usd, 0) as decimal(38, 9)) as provider_cost_usd,
        invoices.subtotal as billed_amount,
        invoices.credits_applied,
        cast(invoices.subtotal - coalesce(costs.provider_cost_usd, 0) as decimal(38, 9)) as gross_margin,
        case
            when invoices.subtotal > 0
                then cast((invoices.subtotal - coalesce(costs.provider_cost_usd, 0)) / invoices.subtotal as double)
        end as gross_margin_ratio
    from invoices
    left join costs using (invoice_id)

)

select * from final
