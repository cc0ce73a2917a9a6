select
    assignment_id,
    tenant_id,
    plan_id,
    effective_from,
    lead(effective_from) over (partition by tenant_id order by effective_from, assignment_id) as effective_to
from {{ ref('stg_plan_assignments') }}
