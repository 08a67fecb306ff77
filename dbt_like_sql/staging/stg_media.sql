-- Media spend and impressions per (market, week, channel): landing rows summed into model weeks.
-- Where two active deliveries hold the same (date, market, channel), the later delivery wins.
{{ config(materialized='incremental_weekly', unique_key=['market', 'week', 'channel'], pending_kind='media') }}
with latest as (
    select m.*
    from {{ source('landing', 'media') }} as m
    join {{ source('landing', 'files') }} as f using (delivery_id)
    where f.status = 'active' and m.week >= $window_start and m.week < $window_end
    qualify row_number() over (partition by m.market, m.channel, m.date order by m.delivery_id desc) = 1
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
