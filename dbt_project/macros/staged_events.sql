{#- The event log, deduplicated on event_id, renamed, with what each event adds to each meter. Shared by
    stg_events and the incremental fct_daily_usage, which reads the log itself so that every run renders the
    log's current location (a view keeps the path it was created with). -#}

{% macro staged_events(relation, min_date=none, max_date=none) %}

    source as (

        select * from {{ relation }}
        {#- event_date is the writer's partition day (the UTC day of occurred_at); a day of slack each side. -#}
        {% if min_date %} where event_date >= cast('{{ min_date }}' as date) - 1 {% endif %}
        {% if max_date %} {{ 'and' if min_date else 'where' }} event_date <= cast('{{ max_date }}' as date) + 1 {% endif %}

    ),

    deduplicated as (

        -- A retried roll can write the same event into two files; event_id makes every step idempotent.
        select * from source
        qualify row_number() over (partition by event_id order by writer_id, seq) = 1

    ),

    renamed as (

        select
            event_id,
            idempotency_key,
            cast(occurred_at as timestamptz) as occurred_at,
            cast(cast(occurred_at as timestamptz) as date) as usage_date,
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
