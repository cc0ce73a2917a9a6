{#- The event log, deduplicated on event_id, renamed, with what each event adds to each meter. Shared by
    stg_events (the whole log, every row checked for copies) and the daily models, which read the log itself so
    that every run renders the log's current location (a view keeps the path it was created with):
    - where: a condition on the log's columns (e.g. the run's days, on event_date);
    - files: a relation of (file, copies_possible): only these files are read (the ones int_log_seq_ranges saw;
      `relation` then names them, read_log_files), and only rows of files that may hold copies are deduplicated
      (the sort is the costly part, copies rare). -#}

{% macro staged_events(relation, where=none, files=none) %}

    source as {{ 'not materialized' if files else '' }} (

        {%- if files %}
        select log.*, files.copies_possible
        from {{ relation }} as log
        join {{ files }} as files on {{ log_path('files.file') }} = log.filename
        {%- else %}
        select * from {{ relation }}
        {%- endif %}
        {%- if where %}
        where {{ where }}
        {%- endif %}

    ),

    deduplicated as (

        -- A copied file repeats its events; event_id makes every step idempotent.
        {%- if files %}
        select * from source where not copies_possible
        union all
        (
            select * from source where copies_possible
            qualify row_number() over (partition by event_id order by writer_id, seq) = 1
        )
        {%- else %}
        select * from source
        qualify row_number() over (partition by event_id order by writer_id, seq) = 1
        {%- endif %}

    ),

    renamed as (

        select
            event_id,
            idempotency_key,
            cast(occurred_at as timestamptz) as occurred_at,
            -- The writer's partition day, the UTC day of occurred_at (checked by the test log_events_valid).
            event_date as usage_date,
            writer_id,
            cast(seq as bigint) as seq,
            tenant_id,
            api_key_id,
            end_user_id,
            conversation_id,
            context,
            kind,
            status,
            provider,
            model,
            coalesce(input_tokens, 0) as input_tokens,
            coalesce(cached_input_tokens, 0) as cached_input_tokens,
            coalesce(cache_write_tokens, 0) as cache_write_tokens,
            coalesce(output_tokens, 0) as output_tokens,
            coalesce(reasoning_tokens, 0) as reasoning_tokens,
            coalesce(tool_calls, 0) as tool_calls,
            coalesce(embedding_tokens, 0) as embedding_tokens,
            cast(coalesce(credits, 0) as decimal(38, 6)) as credits,
            cast(coalesce(provider_cost_usd, 0) as decimal(38, 9)) as provider_cost_usd,
            latency_ms,
            usage_estimated,
            error_code,

            -- What the event adds to each meter (chatmeter/metering.py): a rejected call meters nothing.
            case
                when status <> 'rejected' and kind = 'chat'
                    then coalesce(input_tokens, 0) + coalesce(output_tokens, 0)
                else 0
            end as metered_tokens,
            case
                when status <> 'rejected' and kind = 'chat'
                    and coalesce(input_tokens, 0) + coalesce(output_tokens, 0) > 0 then 1
                else 0
            end as metered_requests,
            case
                when status <> 'rejected' and kind = 'embedding' then coalesce(embedding_tokens, 0)
                else 0
            end as metered_embedding_tokens,
            -- In the log's own decimal types (18 digits): a sum of them is exact and returns 38 digits, and
            -- summing the narrow type costs less than widening every row first (fct_daily_usage: 0.86 -> 0.81 s
            -- on 10 million events).
            case
                when status <> 'rejected' then coalesce(credits, 0)
                else 0
            end as metered_credits,
            -- Provider cost of what reached a provider (errors included: the provider may charge for them).
            case
                when status <> 'rejected' then coalesce(provider_cost_usd, 0)
                else 0
            end as billable_cost_usd

        from deduplicated

    )

{% endmacro %}

{#- The log files int_log_seq_ranges saw for the days matching `where` (a condition on usage_date), as the
    `files` relation staged_events reads, each with whether it may hold copies of events. -#}

{% macro log_files(where) %}

    file_seqs as (

        select
            usage_date,
            writer_id,
            file,
            min(seq_from) as seq_from,
            max(seq_to) as seq_to,
            sum(events) as events,
            sum(seq_to - seq_from + 1) as seqs
        from {{ ref('int_log_seq_ranges') }}
        where {{ where }}
        group by all

    ),

    files as (

        -- A copy of an event has its writer, seq and day: it can only be in a file holding a seq twice, or
        -- whose seqs overlap another file's of the same writer and day (files sorted by first seq).
        select file, bool_or(copies_possible) as copies_possible
        from (
            select
                file,
                events > seqs
                or coalesce(seq_from <= max(seq_to) over (
                    partition by usage_date, writer_id order by seq_from, file
                    rows between unbounded preceding and 1 preceding
                ), false)
                or coalesce(lead(seq_from) over (
                    partition by usage_date, writer_id order by seq_from, file
                ) <= seq_to, false) as copies_possible
            from file_seqs
        )
        group by file

    )

{% endmacro %}
