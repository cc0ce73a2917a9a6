with

source as (

    select * from {{ source('metadata', 'catalog_topup_packs') }}

),

renamed as (

    select
        catalog_version_id,
        pack_id,
        meter,
        cast(units as bigint) as units,
        cast(price as decimal(38, 12)) as price
    from source

)

select * from renamed
