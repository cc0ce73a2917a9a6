-- Split each billing month where the tenant's plan changes. The plan in force at an instant is the latest
-- assignment effective at or before it (ties: the later assignment); before the first assignment, the first
-- one. Each segment bills on the catalog version in force on its first day.

with

periods as (

    select * from {{ ref('int_billing_periods') }}

),

assignments as (

    select * from {{ ref('stg_plan_assignments') }}

),

boundaries as (

    select tenant_id, invoice_id, period_start as boundary from periods
    union
    select periods.tenant_id, periods.invoice_id, assignments.effective_from
    from periods
    join assignments
        on assignments.tenant_id = periods.tenant_id
        and assignments.effective_from > periods.period_start
        and assignments.effective_from < periods.period_end

),

plan_at_boundary as (

    select
        boundaries.*,
        coalesce(
            (select a.plan_id from assignments as a
             where a.tenant_id = boundaries.tenant_id and a.effective_from <= boundaries.boundary
             order by a.effective_from desc, a.assignment_id desc limit 1),
            (select a.plan_id from assignments as a
             where a.tenant_id = boundaries.tenant_id
             order by a.effective_from, a.assignment_id limit 1)
        ) as plan_id
    from boundaries

),

changes as (

    -- Consecutive boundaries on the same plan make one segment.
    select * from plan_at_boundary
    qualify coalesce(lag(plan_id) over (partition by invoice_id order by boundary), '') <> plan_id

),

segments as (

    select
        changes.invoice_id,
        changes.tenant_id,
        changes.plan_id,
        changes.boundary as segment_start,
        coalesce(lead(changes.boundary) over (partition by changes.invoice_id order by changes.boundary),
                 periods.period_end) as segment_end,
        periods.period_start,
        periods.period_end,
        periods.period_seconds,
        periods.period
    from changes
    join periods using (invoice_id)

),

versioned as (

    select
        segments.*,
        versions.catalog_version_id,
        versions.currency,
        versions.margin
    from segments
    left join {{ ref('stg_catalog_versions') }} as versions
        on versions.in_force_from <= cast(segments.segment_start as date)
        and (versions.effective_to is null or cast(segments.segment_start as date) < versions.effective_to)

),

final as (

    select
        invoice_id || '_' || strftime(segment_start, '%Y%m%dT%H%M%S') as segment_id,
        versioned.invoice_id,
        versioned.tenant_id,
        versioned.period,
        versioned.period_start,
        versioned.period_end,
        versioned.period_seconds,
        row_number() over (partition by versioned.invoice_id order by versioned.segment_start) as segment_number,
        count(*) over (partition by versioned.invoice_id) as segments_in_period,
        versioned.segment_start,
        versioned.segment_end,
        cast(epoch(versioned.segment_end) - epoch(versioned.segment_start) as bigint) as segment_seconds,
        versioned.plan_id,
        plans.plan_name,
        plans.monthly_fee,
        plans.pricing,
        versioned.catalog_version_id,
        versioned.currency,
        versioned.margin
    from versioned
    left join {{ ref('stg_catalog_plans') }} as plans
        on plans.catalog_version_id = versioned.catalog_version_id
        and plans.plan_id = versioned.plan_id

)

select * from final
