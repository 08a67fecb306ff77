-- One row per (market, week) of each market's model window: every week from the market's first to its
-- last week with a KPI value, so a missing week shows up as a gap instead of silently disappearing.
{{ config(unique_key=['market', 'week']) }}
select
    market,
    unnest(generate_series(min(week), max(week), interval 7 day))::date as week
from {{ ref('stg_kpi') }}
group by market
