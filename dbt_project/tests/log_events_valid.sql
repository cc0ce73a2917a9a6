-- Per day the run re-processed, every event of the log is well formed and counted exactly once:
-- - well formed: event_id, tenant, writer, seq and time present, kind and status known, and event_date (the day
--   every model counts the event in, and the partition it is read from) the UTC day of occurred_at;
-- - counted once: the events fct_daily_usage counted == the distinct (writer, seq) in int_log_seq_ranges (an
--   event lost, or a copy counted twice, fails); and, on the days writers still append to (the run's day and
--   the day before, as OpenMeter deduplicates within a window), == the distinct event_ids in the files read:
--   an event appended twice under two seqs, which only its id can show, is found while its day is current.
--   Older days only ever gain copies of files (a retried roll, a recovered log), which keep their seqs and are
--   found by them; checking every id of every day again on each full build would cost more than the build.
{{ config(tags=['daily']) }}

{%- set first_current_day = as_of_day() - modules.datetime.timedelta(days=1) %}
{%- set files_by_day = seen_log_files(log_window('usage_date'), by_day=true) %}
{%- set files = files_by_day | map(attribute=1) | sum(start=[]) | unique | list %}
{%- set current_files = [] %}
{%- for day, day_files in files_by_day if day >= first_current_day %}
    {%- do current_files.extend(day_files) %}
{%- endfor %}

with

ranges as (

    select * from {{ ref('int_log_seq_ranges') }} where {{ log_window('usage_date') }}

),

log as not materialized (

    -- The files int_log_seq_ranges saw for these days, named: no listing of the whole log per read.
    select * from {{ read_log_files(files) }} as log where {{ log_window('log.event_date') }}

),

malformed as (

    -- One filter per condition, each its own read of one or two columns, so that the files' statistics and
    -- dictionaries rule a condition out wherever they can (no nulls, the kinds a file holds, the instants a row
    -- group spans) instead of every row being read: the day of occurred_at is checked day by day, on that day's
    -- files, with literal bounds.
    select usage_date, count(*) as events
    from (
        select event_date as usage_date from log where event_id is null
        union all
        select event_date from log where tenant_id is null
        union all
        select event_date from log where writer_id is null
        union all
        select event_date from log where seq is null
        union all
        select event_date from log where occurred_at is null or event_date is null
        union all
        select event_date from log where kind is null or kind not in ('chat', 'embedding', 'tool_call')
        union all
        select event_date from log where status is null or status not in ('ok', 'error', 'rejected')
        {%- for day, files in files_by_day %}
        union all
        select event_date from {{ read_log_files(files) }}
        where event_date = cast('{{ day }}' as date)
            and (occurred_at < timestamptz '{{ day }} 00:00:00+00'
                or occurred_at >= timestamptz '{{ day + modules.datetime.timedelta(days=1) }} 00:00:00+00')
        {%- endfor %}
    )
    group by 1

),

logged as (

    -- Distinct event_ids per current day, as 64-bit hashes, read from those days' files only. Two ids sharing a
    -- hash can only make the test fail (at 10 million events a day, about once in a thousand years), never pass
    -- on a copy. A hash table of the hashes costs less than sorting them (10 million events: 0.9 s against 1.6 s).
    select event_date as usage_date, count(distinct hash(event_id)) as events
    from {{ read_log_files(current_files | unique | list) }}
    where {{ log_window('event_date') }} and event_date >= cast('{{ first_current_day }}' as date)
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

select usage_date, malformed.events as malformed, logged.events as logged, counted.events as counted,
    seqs.events as seqs
from seqs
full outer join counted using (usage_date)
full outer join logged using (usage_date)
full outer join malformed using (usage_date)
where malformed.events > 0
    or counted.events is distinct from seqs.events
    or (logged.events is not null and logged.events is distinct from counted.events)
