with

source as (

    select * from {{ source('metadata', 'invoice_states') }}

),

renamed as (

    select
        invoice_id,
        tenant_id,
        period,
        status,
        cast(total as decimal(38, 9)) as total,
        stripe_invoice_id,
        cast(finalized_at as timestamptz) as finalized_at,
        cast(updated_at as timestamptz) as updated_at
    from source

)

select * from renamed
