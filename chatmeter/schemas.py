"""The files that pass between serving, the pipeline and the dashboards, as Arrow schemas.

Columns are added, never renamed: dbt reads these as sources.
"""

import pyarrow as pa

MONEY = pa.decimal128(18, 9)
CREDITS = pa.decimal128(18, 6)
UTC_TS = pa.timestamp("us", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("idempotency_key", pa.string()),
        ("occurred_at", UTC_TS),
        ("writer_id", pa.string()),
        ("seq", pa.int64()),
        ("tenant_id", pa.string()),
        ("api_key_id", pa.string()),
        ("end_user_id", pa.string()),
        ("conversation_id", pa.string()),
        ("context", pa.string()),
        ("kind", pa.string()),
        ("status", pa.string()),
        ("provider", pa.string()),
        ("model", pa.string()),
        ("input_tokens", pa.int64()),
        ("cached_input_tokens", pa.int64()),
        ("cache_write_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("tool_calls", pa.int64()),
        ("credits", CREDITS),
        ("provider_cost_usd", MONEY),
        ("latency_ms", pa.int64()),
        ("usage_estimated", pa.bool_()),
        # Additions to the contract's columns.
        ("embedding_tokens", pa.int64()),
        ("error_code", pa.string()),
        ("event_date", pa.date32()),
    ]
)

# How every writer of the event log writes its Parquet files (pyarrow.parquet.write_table's options). seq is
# delta-encoded: serving writes a file's seqs in order without a gap, which then take a few bytes instead of
# 8 per event, and the pipeline reads every seq of the log on each build (int_log_seq_ranges: 0.17 -> 0.11 s
# over 10 million events). The other columns keep pyarrow's default dictionaries.
EVENT_PARQUET_OPTIONS = {
    "use_dictionary": [field.name for field in EVENT_SCHEMA if field.name != "seq"],
    "column_encoding": {"seq": "DELTA_BINARY_PACKED"},
}

TRANSCRIPT_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("event_id", pa.string()),
        ("occurred_at", UTC_TS),
        ("tenant_id", pa.string()),
        ("end_user_id", pa.string()),
        ("conversation_id", pa.string()),
        ("context", pa.string()),
        ("position", pa.int32()),
        ("role", pa.string()),
        ("content", pa.string()),
        ("event_date", pa.date32()),
    ]
)

# A limit snapshot row: per scope, meter and window, what the pipeline counted up to its watermark.
SNAPSHOT_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("scope", pa.string()),
        ("scope_id", pa.string()),
        ("meter", pa.string()),
        ("window", pa.string()),
        ("window_start", UTC_TS),
        ("window_end", UTC_TS),
        ("used", pa.decimal128(38, 6)),
        ("limit", pa.decimal128(38, 6)),
        ("remaining", pa.decimal128(38, 6)),
        # Whether the tenant's end users are counted (the pipeline counts them where the plan limits them); a
        # file without it counted every tenant's.
        ("end_users_counted", pa.bool_()),
    ]
)
