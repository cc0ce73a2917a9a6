select
    limits.catalog_version_id || ':' || limits.plan_id || ':' || limits.meter || ':' || limits.window_kind
        || ':' || limits.scope as plan_limit_id,
    limits.*,
    versions.effective_from,
    versions.effective_to
from {{ ref('stg_catalog_limits') }} as limits
join {{ ref('stg_catalog_versions') }} as versions using (catalog_version_id)
