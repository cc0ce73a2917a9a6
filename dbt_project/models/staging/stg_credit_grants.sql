with

source as (

    select * from {{ source('metadata', 'credit_grants') }}

),

renamed as (

    select
        grant_id,
        tenant_id,
        cast(amount as decimal(38, 9)) as amount,
        cast(granted_at as timestamptz) as granted_at,
        cast(expires_at as timestamptz) as expires_at,
        cast(priority as integer) as priority,
        reason
    from source

)

select * from renamed
