with

plans as (

    select * from {{ ref('stg_catalog_plans') }}

),

versions as (

    select * from {{ ref('stg_catalog_versions') }}

),

final as (

    select
        plans.catalog_version_id || ':' || plans.plan_id as plan_version_id,
        plans.*,
        versions.catalog_version,
        versions.effective_from,
        versions.effective_to,
        versions.currency,
        versions.margin
    from plans
    join versions using (catalog_version_id)

)

select * from final
