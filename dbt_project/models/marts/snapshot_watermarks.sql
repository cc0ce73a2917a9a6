select distinct
    writer_id,
    watermark
from {{ ref('int_snapshot_events') }}
