-- KPI per (market, week): landing rows summed into model weeks.
-- Where two active deliveries hold the same (date, market), the later delivery wins.
{{ config(materialized='incremental_weekly', unique_key=['market', 'week'], pending_kind='kpi') }}
with latest as (
    select k.*
    from {{ source('landing', 'kpi') }} as k
    join {{ source('landing', 'files') }} as f using (delivery_id)
    where f.status = 'active' and k.week >= $window_start and k.week < $window_end
    qualify row_number() over (partition by k.market, k.date order by k.delivery_id desc) = 1
)
select
    market,
    week,
    sum(kpi) as kpi,
    count(*)::integer as source_rows,
    max(delivery_id) as last_delivery_id
from latest
group by market, week
