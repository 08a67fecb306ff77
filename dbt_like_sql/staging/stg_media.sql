-- Media spend and impressions per (market, week, channel): landing rows summed into model weeks.
-- Where two active deliveries hold the same (date, market, channel), the later delivery wins.
{% from 'macros/latest_delivery.sql' import latest_delivery with context %}
{{ config(materialized='incremental_weekly', unique_key=['market', 'week', 'channel']) }}
with latest as (
    {{ latest_delivery('media', ['channel']) }}
)
select
    market,
    week,
    channel,
    sum(spend) as spend,
    sum(impressions) as impressions,
    count(*)::integer as source_rows,
    max(delivery_id) as last_delivery_id
from latest
group by market, week, channel
