select
    overage.catalog_version_id || ':' || overage.plan_id || ':' || overage.meter || ':'
        || coalesce(cast(tiers.tier_number as varchar), '0') as plan_overage_id,
    overage.*,
    tiers.tier_number,
    tiers.lower_bound as tier_lower_bound,
    tiers.up_to as tier_up_to,
    tiers.unit_price as tier_unit_price,
    tiers.flat_fee as tier_flat_fee,
    versions.effective_from,
    versions.effective_to
from {{ ref('stg_catalog_overage') }} as overage
left join {{ ref('stg_catalog_overage_tiers') }} as tiers using (catalog_version_id, plan_id, meter)
join {{ ref('stg_catalog_versions') }} as versions using (catalog_version_id)
