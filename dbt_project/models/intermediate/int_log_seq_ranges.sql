{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='usage_date',
        on_schema_change='append_new_columns',
        tags=['daily'],
    )
}}

-- The seqs each log file holds, per UTC day and writer, as contiguous ranges: what the watermark is computed
-- from (snapshot_watermarks), which files fct_daily_usage reads (the files seen here, so both count the same
-- events), and where copies of an event can be (int_log_suspect_files). Re-processes the run's days like
-- fct_daily_usage. Cheap for files as serving writes them (seq order, no gap): a file is one range when
-- seq - row number is the same on every row; the others are split into ranges row by row, read a second time
-- (one read feeding both would be kept whole in memory: 0.3 s instead of 0.2 s on 10 million events).

{%- set logged = logged_files(log_window('day')) %}

with

in_window as (

    select
        filename as path,
        -- The writer's partition day, the UTC day of occurred_at (checked by the test log_events_valid).
        event_date as usage_date,
        writer_id,
        cast(seq as bigint) as seq,
        cast(seq as bigint) - file_row_number as offset_in_file
    from {{ read_log_files(logged) }}
    where {{ log_window('event_date') }}

),

files as (

    select
        path,
        usage_date,
        writer_id,
        count(*) as events,
        min(seq) as seq_from,
        max(seq) as seq_to,
        min(offset_in_file) = max(offset_in_file) as consecutive
    from in_window
    group by all

),

consecutive_files as (

    select path, usage_date, writer_id, seq_from, seq_to, events from files where consecutive

),

other_seqs as (

    select log.filename as path, log.event_date as usage_date, log.writer_id, cast(log.seq as bigint) as seq,
        count(*) as events
    from {{ read_log_files(logged) }} as log
    semi join (select * from files where not consecutive) as other
        on other.path = log.filename and other.usage_date = log.event_date and other.writer_id = log.writer_id
    where {{ log_window('log.event_date') }}
    group by all

),

other_ranges as (

    select path, usage_date, writer_id, min(seq) as seq_from, max(seq) as seq_to, sum(events) as events
    from (
        select *, seq - row_number() over (partition by path, usage_date, writer_id order by seq) as island
        from other_seqs
    )
    group by path, usage_date, writer_id, island

),

final as (

    select
        usage_date,
        writer_id,
        {{ log_file('path') }} as file,
        seq_from,
        seq_to,
        cast(events as bigint) as events
    from (select * from consecutive_files union all select * from other_ranges)

)

select * from final
