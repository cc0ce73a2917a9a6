-- Tenant-days cut by a plan change: a plan segment starts inside the day (not at 00:00 UTC). Usage there is
-- split by instant between two segments, so billing reads those days' events (int_plan_change_day_events);
-- every other day falls whole in one segment and is read from int_tenant_daily_usage.

select distinct
    tenant_id,
    {{ utc_date('segment_start') }} as usage_date
from {{ ref('int_plan_segments') }}
where segment_start <> cast({{ utc_date('segment_start') }} as timestamptz)
