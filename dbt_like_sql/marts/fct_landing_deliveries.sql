-- Every landing delivery the pipeline has seen (accepted, duplicate or superseded) and every quarantined
-- file with the rules it broke: the data-quality audit trail for BI.
select
    path, kind, 'accepted' as outcome, status, delivered_at as seen_at, n_rows, min_week, max_week,
    note as detail
from {{ source('landing', 'files') }}
union all by name
select
    path, kind, 'quarantined' as outcome, 'quarantined' as status, quarantined_at as seen_at,
    null::bigint as n_rows, null::date as min_week, null::date as max_week, message as detail
from {{ source('landing', 'quarantine') }}
