with

source as (

    select * from {{ source('metadata', 'catalog_overage_tiers') }}

),

renamed as (

    select
        catalog_version_id,
        plan_id,
        meter,
        cast(tier_number as integer) as tier_number,
        cast(lower_bound as decimal(38, 6)) as lower_bound,
        cast(up_to as decimal(38, 6)) as up_to,
        cast(unit_price as decimal(38, 12)) as unit_price,
        cast(flat_fee as decimal(38, 12)) as flat_fee
    from source

)

select * from renamed
