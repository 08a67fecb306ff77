-- Lift tests (experiment results) per (market, channel, start_date, end_date, spend, delta_spend), by the
-- week their test ended (week): with channel spending spend a week, changing it by delta_spend a week
-- changed the KPI by lift a week (standard error lift_se). Refits read each market's tests from here.
-- Where two active deliveries hold the same test, the later delivery wins.
{{ config(materialized='incremental_weekly', unique_key=['market', 'channel', 'start_date', 'end_date', 'spend', 'delta_spend']) }}
select
    rows.market,
    rows.week,
    rows.channel,
    rows.start_date,
    rows.end_date,
    rows.spend,
    rows.delta_spend,
    rows.lift,
    rows.lift_se,
    rows.delivery_id as last_delivery_id
from {{ source('landing', 'lift_tests') }} as rows
join {{ source('landing', 'files') }} as files using (delivery_id)
where files.status = 'active' and rows.week >= $window_start and rows.week < $window_end
qualify row_number() over (
    partition by rows.market, rows.channel, rows.start_date, rows.end_date, rows.spend, rows.delta_spend
    order by rows.delivery_id desc
) = 1
