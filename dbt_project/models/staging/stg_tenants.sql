with

source as (

    select * from {{ source('metadata', 'tenants') }}

),

renamed as (

    select
        tenant_id,
        name as tenant_name,
        status,
        cast(anchor_day as integer) as anchor_day,
        webhook_url,
        stripe_customer_id,
        cast(created_at as timestamptz) as created_at
    from source

)

select * from renamed
