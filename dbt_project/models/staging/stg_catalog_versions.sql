with

source as (

    select * from {{ source('metadata', 'catalog_versions') }}

),

renamed as (

    select
        catalog_version_id,
        version as catalog_version,
        digest,
        cast(effective_from as date) as effective_from,
        cast(archived_at as timestamptz) as archived_at,
        currency,
        cast(margin as decimal(38, 12)) as margin,
        default_plan
    from source

),

dated as (

    -- A version is in force from its effective date until the next one's; of two versions with the same
    -- effective date the one archived later wins (the earlier gets an empty range).
    select
        *,
        lead(effective_from) over (order by effective_from, archived_at, catalog_version_id) as effective_to,
        -- The earliest version also governs anything before its effective date (usage older than the catalog).
        case
            when row_number() over (order by effective_from, archived_at, catalog_version_id) = 1
                then date '0001-01-01'
            else effective_from
        end as in_force_from
    from renamed

)

select * from dated
