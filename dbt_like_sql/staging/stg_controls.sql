-- Control values per (market, week, control), with sum, mean and max of the landing rows in the week
-- (the modeling table picks one per control, as configured). A categorical control has a label instead:
-- the week's label is the most frequent one among its rows, a label that marks no event ('', na, none...)
-- counting only when the week has no other (an event day labels its week); ties go to the latest date.
-- Where two active deliveries hold the same (date, market, control), the later delivery wins.
{% from 'macros/latest_delivery.sql' import latest_delivery with context %}
{{ config(materialized='incremental_weekly', unique_key=['market', 'week', 'control']) }}
with latest as (
    {{ latest_delivery('controls', ['control']) }}
),

week_labels as (
    select market, week, control, label
    from (
        select
            market,
            week,
            control,
            label,
            lower(trim(label)) in (
                {%- for marker in no_label_markers %}{{ marker | literal }}{{ ', ' if not loop.last }}{% endfor -%}
            ) as no_label,
            count(*) as n_rows,
            max(date) as last_date
        from latest
        where label is not null
        group by market, week, control, label
    )
    qualify row_number() over (
        partition by market, week, control order by no_label, n_rows desc, last_date desc, label
    ) = 1
)

select
    market,
    week,
    control,
    sum(value) as value_sum,
    avg(value) as value_mean,
    max(value) as value_max,
    any_value(l.label) as label,
    count(*)::integer as source_rows,
    max(delivery_id) as last_delivery_id
from latest
left join week_labels as l using (market, week, control)
group by market, week, control
