{#- The event log, deduplicated on event_id, renamed, with what each event adds to each meter. Shared by
    stg_events (the whole log, every row checked for copies) and the daily models, which read the log itself so
    that every run renders the log's current location (a view keeps the path it was created with):
    - where: a condition on the log's columns (e.g. the run's days, by the writer's partition day event_date);
    - files: a relation of (file, copies_possible): only these files are read (the ones int_log_seq_ranges saw),
      and only rows of files that may hold copies are deduplicated (the sort is the costly part, copies rare). -#}

{% macro staged_events(relation, where=none, files=none) %}

    source as {{ 'not materialized' if files else '' }} (

        {%- if files %}
        select log.*, files.copies_possible
        from {{ relation }} as log
        join {{ files }} as files on files.file = {{ log_file('log.filename') }}
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
            {{ utc_date('cast(occurred_at as timestamptz)') }} as usage_date,
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
            case
                when status <> 'rejected' then cast(coalesce(credits, 0) as decimal(38, 6))
                else cast(0 as decimal(38, 6))
            end as metered_credits,
            -- Provider cost of what reached a provider (errors included: the provider may charge for them).
            case
                when status <> 'rejected' then cast(coalesce(provider_cost_usd, 0) as decimal(38, 9))
                else cast(0 as decimal(38, 9))
            end as billable_cost_usd

        from deduplicated

    )

{% endmacro %}
