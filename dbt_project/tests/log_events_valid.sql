-- Per day the run re-processed, every event of the log is well formed and counted exactly once, checked in one
-- read of the log (one test per column would read it once each):
-- - well formed: event_id, tenant, writer, seq and time present, kind and status known, and event_date (the day
--   every model counts the event in, and the partition it is read from) the UTC day of occurred_at;
-- - counted once: the distinct event_ids in the files the daily models read == the events fct_daily_usage
--   counted == the distinct (writer, seq) in int_log_seq_ranges. Fails on a copy counted twice, an event lost,
--   or two events sharing a writer and seq (the watermark would then count one of them only).
{{ config(tags=['daily']) }}

with

ranges as (

    select * from {{ ref('int_log_seq_ranges') }} where {{ log_window('usage_date') }}

),

rows as (

    select
        log.event_date as usage_date,
        hash(log.event_id) as id_hash,
        log.event_id is null
            or log.tenant_id is null
            or log.writer_id is null
            or log.seq is null
            or log.occurred_at is null or log.event_date is null
            or log.kind is null or log.kind not in ('chat', 'embedding', 'tool_call')
            or log.status is null or log.status not in ('ok', 'error', 'rejected')
            or log.event_date <> {{ utc_date('log.occurred_at') }} as malformed
    from {{ source('log', 'events') }} as log
    semi join (select distinct {{ log_path('file') }} as path from ranges) as files on files.path = log.filename
    where {{ log_window('log.event_date') }}

),

logged as (

    -- Distinct event_ids per day, as 64-bit hashes: rows less those equal to the one before them in hash order
    -- (a sort costs half of a hash table of every id). Two ids sharing a hash can only make the test fail (at 10
    -- million events a day, about once in a thousand years), never pass on a copy.
    select
        usage_date,
        count(*) filter (where id_hash is distinct from previous_hash) as events,
        count(*) filter (where malformed) as malformed
    from (
        select *, lag(id_hash) over (partition by usage_date order by id_hash) as previous_hash
        from rows
    )
    group by 1

),

counted as (

    select usage_date, sum(events) as events from {{ ref('fct_daily_usage') }}
    where {{ log_window('usage_date') }}
    group by 1

),

seqs as (

    -- The length of the union of each writer's ranges in a day (copies overlap).
    select usage_date, sum(greatest(seq_to - greatest(seq_from - 1, coalesce(reached_before, 0)), 0)) as events
    from (
        select *, max(seq_to) over (
            partition by usage_date, writer_id order by seq_from, seq_to
            rows between unbounded preceding and 1 preceding
        ) as reached_before
        from ranges
    )
    group by 1

)

select usage_date, logged.malformed, logged.events as logged, counted.events as counted, seqs.events as seqs
from logged
full outer join counted using (usage_date)
full outer join seqs using (usage_date)
where logged.malformed > 0
    or logged.events is distinct from counted.events
    or logged.events is distinct from seqs.events
