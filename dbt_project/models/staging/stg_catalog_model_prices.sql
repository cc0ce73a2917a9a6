with

source as (

    select * from {{ source('metadata', 'catalog_model_prices') }}

),

renamed as (

    select
        catalog_version_id,
        model,
        provider,
        cast(input_mtok as decimal(38, 12)) as input_mtok,
        cast(output_mtok as decimal(38, 12)) as output_mtok,
        cast(cache_read_mtok as decimal(38, 12)) as cache_read_mtok,
        cast(cache_write_mtok as decimal(38, 12)) as cache_write_mtok
    from source

)

select * from renamed
