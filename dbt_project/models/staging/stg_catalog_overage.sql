with

source as (

    select * from {{ source('metadata', 'catalog_overage') }}

),

renamed as (

    select
        catalog_version_id,
        plan_id,
        meter,
        window_kind,
        charge_model,
        cast(unit_price as decimal(38, 12)) as unit_price,
        cast(package_size as bigint) as package_size,
        cast(package_price as decimal(38, 12)) as package_price,
        cast(flat_amount as decimal(38, 12)) as flat_amount
    from source

)

select * from renamed
