{#- The landing rows of one kind inside the run's week window, keeping for every (market, date, ...keys)
    only the row of the latest active delivery: a correction overrides what it restates. -#}
{% macro latest_delivery(kind, keys) -%}
select rows.*
from {{ source('landing', kind) }} as rows
join {{ source('landing', 'files') }} as files using (delivery_id)
where files.status = 'active' and rows.week >= $window_start and rows.week < $window_end
qualify row_number() over (
    partition by rows.market, rows.date{% for key in keys %}, rows.{{ key }}{% endfor %}
    order by rows.delivery_id desc
) = 1
{%- endmacro %}
