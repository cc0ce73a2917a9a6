{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='usage_date',
        on_schema_change='append_new_columns',
        tags=['daily'],
    )
}}

-- Re-processes whole days: every day of the run (min_date..max_date, see run_vars; without them every day) is
-- deleted and rebuilt from the log, so late events land in their day on the next run covering it. Reads the
-- files int_log_seq_ranges saw for these days, through the staging macro of stg_events.

with

{{ log_files(log_window('usage_date')) }},

{{ staged_events(
    read_log_files(seen_log_files(log_window('usage_date'))), where=log_window('event_date'), files='files'
) }},

daily as (

    select
        usage_date,
        tenant_id,
        api_key_id,
        provider,
        model,
        count(*) as events,
        count(*) filter (where status = 'error') as error_events,
        count(*) filter (where status = 'rejected') as rejected_events,
        sum(case when status <> 'rejected' then input_tokens else 0 end) as input_tokens,
        sum(case when status <> 'rejected' then cached_input_tokens else 0 end) as cached_input_tokens,
        sum(case when status <> 'rejected' then output_tokens else 0 end) as output_tokens,
        sum(case when status <> 'rejected' then reasoning_tokens else 0 end) as reasoning_tokens,
        sum(case when status <> 'rejected' then tool_calls else 0 end) as tool_calls,
        sum(metered_tokens) as tokens,
        sum(metered_requests) as requests,
        sum(metered_embedding_tokens) as embedding_tokens,
        sum(metered_credits) as credits,
        sum(billable_cost_usd) as provider_cost_usd
    from renamed
    group by all

),

final as (

    select
        md5(concat_ws('|', usage_date, tenant_id, coalesce(api_key_id, '~'), coalesce(provider, '~'),
                      coalesce(model, '~'))) as daily_usage_id,
        usage_date,
        tenant_id,
        api_key_id,
        provider,
        model,
        cast(events as bigint) as events,
        cast(error_events as bigint) as error_events,
        cast(rejected_events as bigint) as rejected_events,
        cast(input_tokens as bigint) as input_tokens,
        cast(cached_input_tokens as bigint) as cached_input_tokens,
        cast(output_tokens as bigint) as output_tokens,
        cast(reasoning_tokens as bigint) as reasoning_tokens,
        cast(tool_calls as bigint) as tool_calls,
        cast(tokens as bigint) as tokens,
        cast(requests as bigint) as requests,
        cast(embedding_tokens as bigint) as embedding_tokens,
        cast(credits as decimal(38, 6)) as credits,
        cast(provider_cost_usd as decimal(38, 9)) as provider_cost_usd
    from daily

)

select * from final
