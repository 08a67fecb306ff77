-- Control values per (market, week, control), with sum, mean and max of the landing rows in the week
-- (the modeling table picks one per control, as configured).
-- Where two active deliveries hold the same (date, market, control), the later delivery wins.
{% from 'macros/latest_delivery.sql' import latest_delivery with context %}
{{ config(materialized='incremental_weekly', unique_key=['market', 'week', 'control'], pending_kind='controls') }}
with latest as (
    {{ latest_delivery('controls', ['control']) }}
)
select
    market,
    week,
    control,
    sum(value) as value_sum,
    avg(value) as value_mean,
    max(value) as value_max,
    count(*)::integer as source_rows,
    max(delivery_id) as last_delivery_id
from latest
group by market, week, control
