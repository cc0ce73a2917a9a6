select
    prices.catalog_version_id || ':' || prices.model as model_price_id,
    prices.*,
    versions.effective_from,
    versions.effective_to
from {{ ref('stg_catalog_model_prices') }} as prices
join {{ ref('stg_catalog_versions') }} as versions using (catalog_version_id)
