select * from {{ ref('stg_catalog_versions') }}
