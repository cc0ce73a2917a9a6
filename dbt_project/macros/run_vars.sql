{#- What a run is for: `as_of` (the instant treated as now) and the days [min_date, max_date] the daily models
    re-process. A `--vars` value wins (hand runs, unit tests); else the pipeline's environment
    (CHATMETER_AS_OF, CHATMETER_MIN_DATE, CHATMETER_MAX_DATE), read only when a node executes: values that
    change every run must not reach the parser, or dbt throws its partial parse away (a full re-parse costs
    seconds per invocation). -#}

{% macro run_var(name) -%}
    {%- set value = var(name) -%}
    {%- if not value and execute -%}
        {%- set value = env_var('CHATMETER_' ~ name | upper, '') -%}
    {%- endif -%}
    {{- return(value or none) -}}
{%- endmacro %}

{% macro log_window(column, slack=0) -%}
    {#- The run's days as a condition on a date column ('true' when it re-processes every day). -#}
    {%- set min_date, max_date = run_var('min_date'), run_var('max_date') -%}
    {%- set conditions = [] -%}
    {%- if min_date -%}
        {%- do conditions.append(column ~ " >= cast('" ~ min_date ~ "' as date) - " ~ slack) -%}
    {%- endif -%}
    {%- if max_date -%}
        {%- do conditions.append(column ~ " <= cast('" ~ max_date ~ "' as date) + " ~ slack) -%}
    {%- endif -%}
    {{- conditions | join(' and ') if conditions else 'true' -}}
{%- endmacro %}

{% macro utc_date(ts) -%}
    {#- The UTC day of a timestamptz, from its epoch: the same as a cast to date in a UTC session, without
        the time zone library (4x cheaper over millions of events). Floor division for instants before 1970. -#}
    cast(date '1970-01-01' + cast(
        (epoch_us({{ ts }}) - (((epoch_us({{ ts }}) % 86400000000) + 86400000000) % 86400000000)) // 86400000000
    as integer) as date)
{%- endmacro %}

{% macro log_file(path) -%}
    {#- A log file as `event_date=YYYY-MM-DD/<name>.parquet`: the same wherever the data dir lives. -#}
    regexp_extract({{ path }}, '[^/]+/[^/]+$')
{%- endmacro %}

{% macro log_path(file) -%}
    {#- A log file (as log_file names it) as the path the source reports in its filename column: matching the
        filename itself is cheaper than taking every row's filename apart. -#}
    ('{{ log_root() | replace("'", "''") }}/' || {{ file }})
{%- endmacro %}

{% macro seen_log_files(where, by_day=false) -%}
    {#- The log files int_log_seq_ranges saw in its ranges matching `where` (a condition on `ranges`, e.g. on
        usage_date): a list, or with by_day a list of (day, files). Empty when dbt only parses. -#}
    {%- set by_days, files, ranges = [], [], ref('int_log_seq_ranges') -%}
    {%- if execute -%}
        {%- set result = run_query(
            "select usage_date, string_agg(distinct file, chr(10) order by file) from " ~ ranges
            ~ " as ranges where " ~ where ~ " group by 1 order by 1"
        ) -%}
        {%- for day, day_files in result.rows -%}
            {%- do by_days.append((day, day_files.split('\n'))) -%}
            {%- do files.extend(day_files.split('\n')) -%}
        {%- endfor -%}
    {%- endif -%}
    {{- return(by_days if by_day else files | unique | list) -}}
{%- endmacro %}

{% macro read_log_files(files) -%}
    {#- The given log files (as log_file names them) read as the source reads the whole log, opening only these
        (opening the whole log costs more than reading a day of it); none: an empty file of its schema. While dbt
        parses (no files yet) the source itself, so that every model reading the log depends on it. -#}
    {%- if files -%}
    read_parquet([
        {%- for file in files -%}
            '{{ (log_root() ~ '/' ~ file) | replace("'", "''") }}'{{ ', ' if not loop.last }}
        {%- endfor -%}
    ], union_by_name = true, hive_partitioning = false, filename = true, file_row_number = true)
    {%- elif execute and env_var('CHATMETER_EMPTY_EVENTS', '') -%}
    read_parquet('{{ env_var('CHATMETER_EMPTY_EVENTS') | replace("'", "''") }}', union_by_name = true,
        hive_partitioning = false, filename = true, file_row_number = true)
    {%- else -%}
    (select * from {{ source('log', 'events') }} where false)
    {%- endif -%}
{%- endmacro %}

{% macro logged_files(where) -%}
    {#- The log's files (as log_file names them) whose day folder matches `where` (a condition on `day`), listed
        without opening any: a run opens the files of its days only, however long the log. Empty when dbt only
        parses. -#}
    {%- set files = [] -%}
    {%- if execute -%}
        {%- set result = run_query(
            "select file from (select " ~ log_file('file') ~ " as file, "
            ~ "try_cast(regexp_extract(file, 'event_date=([0-9-]+)/[^/]+$', 1) as date) as day "
            ~ "from glob('" ~ (log_root() ~ '/*/*.parquet') | replace("'", "''") ~ "')) "
            ~ "where " ~ where ~ " order by 1"
        ) -%}
        {%- set files = result.columns[0].values() | list -%}
    {%- endif -%}
    {{- return(files) -}}
{%- endmacro %}

{% macro log_root() -%}
    {#- The folder of the event log's day partitions. -#}
    {{- return(env_var('CHATMETER_DATA_DIR', '../data') ~ '/events') -}}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
    {#- dbt's, plus a placeholder: a test configured `where: "__run_days__:<date column>"` checks only the days
        the run re-processes (log_window), so a daily run does not re-read every day. -#}
    {%- set where = config.get('where') or '' -%}
    {%- if where.startswith('__run_days__:') -%}
        {%- set where = log_window(where.split(':', 1)[1]) -%}
    {%- endif -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
