-- The modeling table: one row per (market, week) of the model window with spend and impressions per
-- channel, controls, the KPI and calendar features. Columns follow the configured channels and controls;
-- a categorical control's column holds the week's label (the model turns it into indicators).
{{ config(unique_key=['market', 'week']) }}
with media as (
    select
        market,
        week
        {%- for ch in channels %},
        sum(spend) filter (where channel = {{ ch | literal }}) as {{ ('spend_' ~ ch) | ident }},
        sum(impressions) filter (where channel = {{ ch | literal }}) as {{ ('impressions_' ~ ch) | ident }}
        {%- endfor %}
    from {{ ref('stg_media') }}
    group by market, week
),

controls as (
    select
        market,
        week
        {%- for c in controls %},
        {%- if c.kind == 'categorical' %}
        max(label) filter (where control = {{ c.name | literal }}) as {{ ('control_' ~ c.name) | ident }}
        {%- else %}
        max(value_{{ c.aggregate }}) filter (where control = {{ c.name | literal }}) as {{ ('control_' ~ c.name) | ident }}
        {%- endif %}
        {%- endfor %}
    from {{ ref('stg_controls') }}
    group by market, week
)

select
    w.market,
    w.week,
    k.kpi
    {%- for ch in channels %}
    {%- set spend = 'spend_' ~ ch %}
    {%- set impressions = 'impressions_' ~ ch %},
    {%- if media_gap_fill == 'zero' %}
    coalesce(m.{{ spend | ident }}, 0.0) as {{ spend | ident }},
    case when m.{{ spend | ident }} is null then 0.0 else m.{{ impressions | ident }} end as {{ impressions | ident }}
    {%- else %}
    m.{{ spend | ident }},
    m.{{ impressions | ident }}
    {%- endif %}
    {%- endfor %}
    {%- for c in controls %}
    {%- set col = 'control_' ~ c.name %},
    {%- if c.fill == 'zero' and c.kind == 'categorical' %}
    c.{{ col | ident }}
    {%- elif c.fill == 'zero' %}
    coalesce(c.{{ col | ident }}, 0.0) as {{ col | ident }}
    {%- elif c.fill == 'ffill' %}
    last_value(c.{{ col | ident }} ignore nulls) over (partition by w.market order by w.week) as {{ col | ident }}
    {%- else %}
    c.{{ col | ident }}
    {%- endif %}
    {%- endfor %},
    cal.year,
    cal.quarter,
    cal.month,
    cal.week_of_year,
    cal.holiday_count
from {{ ref('int_model_weeks') }} as w
left join {{ ref('stg_kpi') }} as k using (market, week)
left join media as m using (market, week)
left join controls as c using (market, week)
left join {{ ref('int_calendar_weekly') }} as cal using (market, week)
order by w.market, w.week
