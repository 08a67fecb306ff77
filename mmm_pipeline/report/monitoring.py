"""What the report says about the alarms and about past recommendations ("Did the last recommendations
deliver?"). Pure functions from :class:`~mmm_pipeline.report.data.ReportData` to the dicts the
``scorecard`` templates lay out; kept apart from :mod:`.content` so each section changes on its own.
"""

from __future__ import annotations

import pandas as pd

from .data import ReportData

#: The promised intervals are 94% HDIs: a stable, well-calibrated model's coverage sits near this.
NOMINAL_COVERAGE = 0.94
#: Rows of the scorecard table in the report (the newest recommendations; BI holds all of them).
SCORECARD_ROWS = 8


def alarm_statement(rate_per_year: float | None, min_weeks: int | None) -> dict | None:
    """The drift alarms' stated false-alarm rate per stable year and their damping (None: monitoring
    is off), as the report states them next to the tracked performance."""
    if rate_per_year is None:
        return None
    return {"rate": rate_per_year, "min_weeks": min_weeks}


def scorecard_summary(data: ReportData) -> dict | None:
    """Every recommendation of the market against what happened: counts, the coverage of the promised
    intervals (overall, and over the recommendations whose spend followed), the realized uplift against
    the promised one, the newest rows, and the latest promise still waiting for its weeks. None when no
    recommendation has been scored."""
    card = data.scorecard
    if card.empty:
        return None
    card = card.sort_values("created_at")
    done = card[card["status"] == "complete"]
    followed = done[done["followed"].fillna(False).astype(bool)]
    uplift = done[done["uplift_in_interval"].notna()]
    waiting = card[card["status"].isin(["pending", "partial"])]
    latest = None if waiting.empty else waiting.iloc[-1].to_dict()
    rows = card[card["status"] != "no_forecast"].tail(SCORECARD_ROWS).iloc[::-1]
    return {
        "recommendations": len(card),
        "complete": len(done),
        "in_interval": int(done["in_interval"].astype(bool).sum()),
        "coverage": float(done["in_interval"].astype(bool).mean()) if len(done) else None,
        "followed": len(followed),
        "coverage_followed": float(followed["in_interval"].astype(bool).mean()) if len(followed) else None,
        "uplift_scored": len(uplift),
        "uplift_coverage": float(uplift["uplift_in_interval"].astype(bool).mean()) if len(uplift) else None,
        "nominal": NOMINAL_COVERAGE,
        "no_forecast": int((card["status"] == "no_forecast").sum()),
        "latest_waiting": latest,
        "rows": [_row(r) for r in rows.to_dict("records")],
    }


def _row(r: dict) -> dict:
    """One scorecard row for the table, with ``verdict`` in words."""
    if r["status"] != "complete":
        verdict = f"waiting ({int(r['weeks_landed'] or 0)} of {int(r['weeks'])} weeks landed)"
    elif bool(r["in_interval"]):
        verdict = "inside"
    else:
        verdict = "above" if r["actual_kpi"] > r["promised_kpi_hdi_high"] else "below"
    return r | {"verdict": verdict, "created": pd.Timestamp(r["created_at"]).date()}
