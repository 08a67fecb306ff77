-- KPI per (market, week): landing rows summed into model weeks.
-- Where two active deliveries hold the same (date, market), the later delivery wins.
{% from 'macros/latest_delivery.sql' import latest_delivery with context %}
{{ config(materialized='incremental_weekly', unique_key=['market', 'week']) }}
with latest as (
    {{ latest_delivery('kpi', []) }}
)
select
    market,
    week,
    sum(kpi) as kpi,
    count(*)::integer as source_rows,
    max(delivery_id) as last_delivery_id
from latest
group by market, week
