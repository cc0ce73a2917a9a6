with

source as (

    select * from {{ source('metadata', 'topups') }}

),

renamed as (

    select
        topup_id,
        tenant_id,
        meter,
        cast(units as bigint) as units,
        cast(amount as decimal(38, 9)) as amount,
        cast(granted_at as timestamptz) as granted_at,
        cast(expires_at as timestamptz) as expires_at,
        cast(priority as integer) as priority,
        source as topup_source
    from source

)

select * from renamed
