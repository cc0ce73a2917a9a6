-- Per writer, the dense prefix of its seqs in the log as the daily models read it: the largest n such that
-- every seq 1..n is in int_log_seq_ranges (ranges of all days and files merged, copies overlapping).

with

ranges as (

    select
        writer_id,
        seq_from,
        seq_to,
        max(seq_to) over (
            partition by writer_id order by seq_from, seq_to rows between unbounded preceding and 1 preceding
        ) as reached_before
    from {{ ref('int_log_seq_ranges') }}

),

first_gaps as (

    -- The first range starting past everything before it + 1 (the first one past 0 + 1 when seq 1 is missing).
    select writer_id, min(seq_from) as first_after_gap
    from ranges
    where seq_from > coalesce(reached_before, 0) + 1
    group by 1

),

final as (

    select
        ranges.writer_id,
        max(ranges.seq_to) as watermark
    from ranges
    left join first_gaps using (writer_id)
    where first_gaps.first_after_gap is null or ranges.seq_from < first_gaps.first_after_gap
    group by 1

)

select * from final
