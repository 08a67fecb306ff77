"""The modeling-table fingerprint: the same values give the same version however they were read; any
changed value, in any column or week, gives another."""

from __future__ import annotations

import pandas as pd

from mmm_pipeline.features.data_version import modeling_fingerprint


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "market": ["north"] * 3,
            "week": pd.to_datetime(["2024-01-01", "2024-01-08", "2024-01-15"]),
            "kpi": [100.0, 101.5, 99.25],
            "spend_tv": [10.0, 0.0, 12.5],
            "control_price": [1.0, None, 1.1],
            "year": [2024, 2024, 2024],
        }
    )


def test_same_values_same_fingerprint_whatever_the_order_or_types() -> None:
    rows = _rows()
    reordered = rows.iloc[::-1][list(reversed(rows.columns))]
    retyped = rows.assign(week=[d.date() for d in rows["week"]], year=rows["year"].astype("int32"))
    assert modeling_fingerprint(rows) == modeling_fingerprint(reordered) == modeling_fingerprint(retyped)


def test_any_changed_value_changes_the_fingerprint() -> None:
    base = modeling_fingerprint(_rows())
    changes = {
        "kpi": lambda r: r.assign(kpi=[100.0, 101.5 + 1e-9, 99.25]),
        "spend": lambda r: r.assign(spend_tv=[10.0, 0.0, 12.0]),
        "control filled": lambda r: r.assign(control_price=[1.0, 1.0, 1.1]),
        "week moved": lambda r: r.assign(week=r["week"] + pd.Timedelta(days=7)),
        "row dropped": lambda r: r.iloc[:2],
        "column added": lambda r: r.assign(spend_radio=0.0),
    }
    fingerprints = {name: modeling_fingerprint(change(_rows())) for name, change in changes.items()}
    assert base not in fingerprints.values()
    assert len(set(fingerprints.values())) == len(changes)
