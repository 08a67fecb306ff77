-- One row per configured media channel with its group (e.g. digital, traditional), for BI joins.
{{ config(unique_key=['channel']) }}
select * from (
    values
    {%- for c in channel_configs %}
    ({{ c.name | literal }}, {{ c.group | literal }}){{ "," if not loop.last }}
    {%- endfor %}
) as t(channel, channel_group)
