with

source as (

    select * from {{ source('metadata', 'catalog_limits') }}

),

renamed as (

    select
        catalog_version_id,
        plan_id,
        meter,
        window_kind,
        scope,
        cast(included as decimal(38, 6)) as included,
        cast(soft as decimal(38, 6)) as soft,
        cast(hard as decimal(38, 6)) as hard
    from source

)

select * from renamed
