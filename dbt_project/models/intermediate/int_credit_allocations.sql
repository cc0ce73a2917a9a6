-- Credit grants consumed over each tenant's invoices in period order. For each invoice, the grants usable
-- then (granted before the period ends, not expired before it ends) pay the subtotal in order: lower
-- priority number first, then earliest expiry (none last), then oldest grant. Grants count to the cent.

with recursive

invoices as (

    select
        periods.invoice_id,
        periods.tenant_id,
        periods.period_number,
        periods.period_end,
        coalesce(sum(charges.amount), 0) as subtotal
    from {{ ref('int_billing_periods') }} as periods
    left join {{ ref('int_invoice_charges') }} as charges using (invoice_id)
    group by all

),

grants as (

    select
        grant_id,
        tenant_id,
        {{ round_cents('amount') }} as amount,
        granted_at,
        expires_at,
        row_number() over (
            partition by tenant_id
            order by priority, expires_at nulls last, granted_at, grant_id
        ) as grant_rank
    from {{ ref('stg_credit_grants') }}

),

allocation as (

    select
        grants.tenant_id,
        cast(0 as bigint) as period_number,
        cast(null as varchar) as invoice_id,
        grants.grant_id,
        grants.amount as remaining,
        cast(0 as decimal(18, 2)) as consumed
    from grants

    union all

    select
        tenant_id, period_number, invoice_id, grant_id,
        cast(remaining - take as decimal(18, 2)),
        cast(take as decimal(18, 2))
    from (
        select
            previous.tenant_id,
            invoices.period_number,
            invoices.invoice_id,
            previous.grant_id,
            previous.remaining,
            case
                when grants.granted_at < invoices.period_end
                    and (grants.expires_at is null or grants.expires_at >= invoices.period_end)
                then greatest(0, least(
                    previous.remaining,
                    invoices.subtotal - coalesce(sum(
                        case
                            when grants.granted_at < invoices.period_end
                                and (grants.expires_at is null or grants.expires_at >= invoices.period_end)
                            then previous.remaining else 0
                        end
                    ) over (
                        partition by previous.tenant_id
                        order by grants.grant_rank
                        rows between unbounded preceding and 1 preceding
                    ), 0)
                ))
                else 0
            end as take
        from allocation as previous
        join invoices
            on invoices.tenant_id = previous.tenant_id
            and invoices.period_number = previous.period_number + 1
        join grants using (grant_id)
    )

),

final as (

    select
        allocation.invoice_id,
        allocation.tenant_id,
        allocation.grant_id,
        grants.grant_rank,
        allocation.consumed,
        allocation.remaining
    from allocation
    join grants using (grant_id)
    where allocation.period_number > 0 and allocation.consumed > 0

)

select * from final
