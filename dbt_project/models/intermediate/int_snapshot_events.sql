{{ config(materialized='table') }}

-- The events a limit snapshot counts, read from the log once (so usage and watermark agree): per writer,
-- the dense prefix of seq 1..n present in this read. Events past a gap are left for the API's live delta.

with events as materialized (

    select * from {{ ref('stg_events') }}

),

seqs as (

    select
        writer_id,
        seq,
        row_number() over (partition by writer_id order by seq) as position
    from (select distinct writer_id, seq from events)

),

watermarks as (

    select
        writer_id,
        coalesce(max(seq) filter (where seq = position), 0) as watermark
    from seqs
    group by 1

)

select
    events.*,
    watermarks.watermark
from events
join watermarks using (writer_id)
where events.seq <= watermarks.watermark
