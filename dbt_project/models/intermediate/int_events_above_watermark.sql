-- The events the daily models counted that lie above their writer's watermark (past a gap in its seqs, or a
-- writer whose seq 1 is missing): limit_snapshot takes them back out, as the API counts them live. Read from
-- exactly the files and days int_log_seq_ranges recorded with such seqs; none (no scan) when the log is dense.

{%- set files = seen_log_files(
    "seq_to > coalesce((select w.watermark from " ~ ref('snapshot_watermarks') ~ " as w "
    ~ "where w.writer_id = ranges.writer_id), 0)"
) %}

with

{{ staged_events(read_log_files(files)) }},

ranges as (

    select ranges.*, coalesce(watermarks.watermark, 0) as watermark
    from {{ ref('int_log_seq_ranges') }} as ranges
    left join {{ ref('snapshot_watermarks') }} as watermarks using (writer_id)
    where ranges.seq_to > coalesce(watermarks.watermark, 0)

),

final as (

    -- Only the rows the daily models counted: this file's rows of a day they read it for.
    select renamed.*
    from renamed
    where exists (
        select 1 from ranges
        where ranges.writer_id = renamed.writer_id
            and ranges.usage_date = renamed.usage_date
            and renamed.seq between ranges.seq_from and ranges.seq_to
            and renamed.seq > ranges.watermark
    )

)

select * from final
