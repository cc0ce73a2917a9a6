with

source as (

    select * from {{ source('metadata', 'catalog_plans') }}

),

renamed as (

    select
        catalog_version_id,
        plan_id,
        plan_name,
        cast(monthly_fee as decimal(38, 12)) as monthly_fee,
        pricing
    from source

)

select * from renamed
