with

periods as (

    select * from {{ ref('int_billing_periods') }}

),

lines as (

    select
        invoice_id,
        sum(case when kind <> 'credit' then amount else 0 end) as subtotal,
        -sum(case when kind = 'credit' then amount else 0 end) as credits_applied,
        sum(amount) as total,
        count(*) as line_count
    from {{ ref('invoice_lines') }}
    group by 1

),

last_segment as (

    select * from {{ ref('int_plan_segments') }}
    qualify row_number() over (partition by invoice_id order by segment_start desc) = 1

),

states as (

    select * from {{ ref('stg_invoice_states') }}

),

final as (

    select
        periods.invoice_id,
        periods.tenant_id,
        periods.period,
        last_segment.plan_id as plan,
        periods.period_start,
        periods.period_end,
        coalesce(last_segment.currency, 'USD') as currency,
        case
            when states.status = 'paid' then 'paid'
            -- Nothing to collect: settled on finalization (as Stripe does with zero-amount invoices).
            when periods.period_end <= {{ as_of() }} and coalesce(lines.total, 0) = 0 then 'paid'
            when periods.period_end <= {{ as_of() }} then 'finalized'
            else 'draft'
        end as status,
        cast(coalesce(lines.subtotal, 0) as decimal(18, 2)) as subtotal,
        cast(coalesce(lines.credits_applied, 0) as decimal(18, 2)) as credits_applied,
        cast(coalesce(lines.total, 0) as decimal(18, 2)) as total,
        cast(coalesce(lines.line_count, 0) as integer) as line_count
    from periods
    left join lines using (invoice_id)
    left join last_segment using (invoice_id)
    left join states using (invoice_id)

)

select * from final
