-- Calendar features per (market, week): position in the year and the public holidays in the week.
{{ config(unique_key=['market', 'week']) }}
select
    w.market,
    w.week,
    year(w.week) as year,
    quarter(w.week) as quarter,
    month(w.week) as month,
    weekofyear(w.week) as week_of_year,
    count(h.date)::integer as holiday_count,
    coalesce(string_agg(h.name, '; ' order by h.date), '') as holiday_names
from {{ ref('int_model_weeks') }} as w
left join {{ source('reference', 'holidays') }} as h
    on h.date >= w.week and h.date < w.week + interval 7 day
group by w.market, w.week
