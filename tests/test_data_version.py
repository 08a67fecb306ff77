"""The modeling-table fingerprint: the same values give the same version however they were read; any
changed value, in any column or week, gives another."""

from __future__ import annotations

import pandas as pd

from mmm_pipeline.features.data_version import market_inputs_version, modeling_fingerprint


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


def _lift_tests() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "market": ["north", "north"],
            "channel": ["tv", "search"],
            "start_date": pd.to_datetime(["2024-01-01", "2024-01-08"]).date,
            "end_date": pd.to_datetime(["2024-01-28", "2024-02-04"]).date,
            "spend": [1000.0, 500.0],
            "delta_spend": [500.0, 250.0],
            "lift": [120.0, 40.0],
            "lift_se": [30.0, 10.0],
        }
    )


def test_a_lift_test_corrected_in_place_changes_the_inputs_version() -> None:
    """The fit's data version follows the lift tests' content, not their count or order."""
    base = market_inputs_version(_rows(), _lift_tests())
    assert market_inputs_version(_rows(), _lift_tests().iloc[::-1]) == base
    corrected = _lift_tests()
    corrected.loc[0, "lift"] = 121.0
    assert len(corrected) == len(_lift_tests())
    assert market_inputs_version(_rows(), corrected) != base
    assert market_inputs_version(_rows(), _lift_tests().iloc[:0]) != base
    assert market_inputs_version(_rows().iloc[:2], _lift_tests()) != base
