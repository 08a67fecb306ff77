-- Media per (market, week, channel) in long form for BI: spend, impressions, cost per thousand.
{{ config(unique_key=['market', 'week', 'channel']) }}
select
    m.market,
    m.week,
    m.channel,
    coalesce(d.channel_group, 'unconfigured') as channel_group,
    m.spend,
    m.impressions,
    case when m.impressions > 0 then 1000 * m.spend / m.impressions end as cpm
from {{ ref('stg_media') }} as m
left join {{ ref('dim_channel') }} as d using (channel)
