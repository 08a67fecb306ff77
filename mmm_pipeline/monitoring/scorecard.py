"""The scorecard of every issued recommendation: what it promised for its plan weeks against what happened.

A recommendation promises, for the weeks of its plan (``optimization.plan_summary``'s ``forecast_*``
columns, :func:`mmm_pipeline.model.predict.forecast_plan`), a KPI with a 94% HDI and an uplift over the
previous (current) allocation with its HDI. Once all of those weeks have landed, the scorecard sets the
actual KPI against the promised interval, and the recommendation's own model forecasts the same weeks
under the previous allocation with the controls as they landed (the counterfactual: what the KPI would
have been without the change), so the realized uplift is ``actual - counterfactual`` per draw. Whether the
spend actually followed the recommendation is measured too (``spend_deviation``): a promise made for a
spend that did not happen says little about the model. Across recommendations, the share of actuals
inside their promised interval (the coverage) should sit near the nominal 94% on a stable model; a
break shows as misses from the break on.

Pure: promises, allocations, modeling rows and a model loader in, the rows of
``monitoring.recommendation_scorecard`` out. No Dagster, no DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from mmm_pipeline.ingest.categorical import with_indicators
from mmm_pipeline.model.build import ModelData
from mmm_pipeline.model.predict import PosteriorDraws, forecast_plan, interval, thin
from mmm_pipeline.model.registry import StoredModel

#: Spend within this share of the recommended total (summed absolute differences per channel and week)
#: counts as following the recommendation.
FOLLOW_TOLERANCE = 0.10

#: Columns of ``monitoring.recommendation_scorecard`` computed here (the asset adds ``scored_at`` and
#: ``dagster_run_id``).
SCORECARD_COLUMNS = [
    "optimization_id", "market", "model_id", "created_at", "trigger", "plan", "mode", "weeks", "first_week",
    "last_week", "status", "weeks_landed", "promised_kpi_mean", "promised_kpi_hdi_low",
    "promised_kpi_hdi_high", "promised_uplift_mean", "promised_uplift_hdi_low", "promised_uplift_hdi_high",
    "recommended_spend", "previous_spend", "actual_spend", "spend_deviation", "followed", "actual_kpi",
    "kpi_error", "kpi_pct_error", "in_interval", "counterfactual_kpi_mean", "counterfactual_kpi_hdi_low",
    "counterfactual_kpi_hdi_high", "realized_uplift_mean", "realized_uplift_hdi_low",
    "realized_uplift_hdi_high", "uplift_in_interval", "coverage_to_date", "note",
]  # fmt: skip


def _matrix(allocations: pd.DataFrame, column: str, channels: list[str]) -> np.ndarray:
    """``(H, C)`` spend of one allocation column, plan weeks by the model's channels."""
    wide = allocations.pivot_table(index="week_index", columns="channel", values=column, aggfunc="sum")
    return wide.reindex(columns=channels).fillna(0.0).to_numpy(float)


def score(
    promise: Mapping[str, object],
    allocations: pd.DataFrame,
    rows: pd.DataFrame,
    model: StoredModel | None,
    max_draws: int | None = 1000,
) -> dict[str, object]:
    """One recommendation's scorecard row (without ``coverage_to_date``).

    ``promise``: its ``plan_summary`` row (``forecast_*`` columns) plus ``trigger``; ``allocations``: its
    ``weekly_allocations`` rows (``week_index, channel, current, recommended``); ``rows``: the market's
    modeling rows (every landed week); ``model``: the recommendation's model (``None``: its artifact is
    gone, no counterfactual). The actual, the counterfactual and the spend are read only once every plan
    week has landed (``status`` ``complete``).
    """
    weeks = int(promise["weeks"])
    out: dict[str, object] = dict.fromkeys(SCORECARD_COLUMNS)
    out |= {k: promise.get(k) for k in ("optimization_id", "market", "model_id", "created_at", "trigger",
                                        "plan", "mode", "weeks")}  # fmt: skip
    start = promise.get("forecast_start")
    if start is None or pd.isna(start) or promise.get("forecast_kpi_mean") is None:
        return out | {
            "status": "no_forecast",
            "weeks_landed": 0,
            "note": "recorded before the plan forecast existed: nothing was promised for its weeks",
        }
    dates = pd.DatetimeIndex([pd.Timestamp(start) + pd.Timedelta(weeks=i) for i in range(weeks)])
    out |= {
        "first_week": dates[0].date(), "last_week": dates[-1].date(),
        "promised_kpi_mean": promise["forecast_kpi_mean"],
        "promised_kpi_hdi_low": promise["forecast_kpi_hdi_low"],
        "promised_kpi_hdi_high": promise["forecast_kpi_hdi_high"],
        "promised_uplift_mean": promise["forecast_uplift_mean"],
        "promised_uplift_hdi_low": promise["forecast_uplift_hdi_low"],
        "promised_uplift_hdi_high": promise["forecast_uplift_hdi_high"],
        "recommended_spend": float(allocations["recommended"].sum()),
        "previous_spend": float(allocations["current"].sum()),
    }  # fmt: skip
    market_rows = rows[rows["market"] == promise["market"]].sort_values("week")
    landed = market_rows[pd.to_datetime(market_rows["week"]).isin(dates) & market_rows["kpi"].notna()]
    out["weeks_landed"] = len(landed)
    if len(landed) < weeks:
        out["status"] = "pending" if landed.empty else "partial"
        return out
    out["status"] = "complete"
    actual = float(landed["kpi"].sum())
    channels = sorted(allocations["channel"].unique())
    if model is not None:
        channels = list(model.scaling.channels)
    recommended = _matrix(allocations, "recommended", channels)
    previous = _matrix(allocations, "current", channels)
    spent = landed[[f"spend_{c}" for c in channels]].to_numpy(float)
    deviation = float(np.abs(spent - recommended).sum() / max(recommended.sum(), 1e-300))
    low, high = float(promise["forecast_kpi_hdi_low"]), float(promise["forecast_kpi_hdi_high"])
    out |= {
        "actual_spend": float(spent.sum()), "spend_deviation": deviation,
        "followed": deviation <= FOLLOW_TOLERANCE, "actual_kpi": actual,
        "kpi_error": actual - float(promise["forecast_kpi_mean"]),
        "kpi_pct_error": (actual - float(promise["forecast_kpi_mean"])) / actual if actual else None,
        "in_interval": low <= actual <= high,
    }  # fmt: skip
    if model is None:
        return out | {"note": f"model {promise['model_id']} not found: no counterfactual"}
    frame = with_indicators(market_rows, model.scaling.controls)
    data = ModelData.from_frame(
        frame, str(promise["market"]), channels=channels, controls=model.scaling.controls
    )
    draws = thin(PosteriorDraws.from_idata(model.idata, model.spec), max_draws)
    counterfactual = forecast_plan(
        draws, model.scaling, model.spec, data, dates[0] - pd.Timedelta(weeks=1), {"previous": previous}
    ).predictions["previous"]
    cf = interval(counterfactual.kpi.sum(axis=1))
    realized = interval(actual - counterfactual.kpi.sum(axis=1))
    # The realized uplift carries the weeks' observation noise (the actual is one draw of it); the promised
    # uplift is a difference of expected KPIs, where that noise cancels. So the promise is judged
    # consistent when its mean lies inside the realized uplift's interval, not the other way round.
    promised_uplift = float(promise["forecast_uplift_mean"])
    return out | {
        "counterfactual_kpi_mean": cf[0], "counterfactual_kpi_hdi_low": cf[1],
        "counterfactual_kpi_hdi_high": cf[2],
        "realized_uplift_mean": realized[0], "realized_uplift_hdi_low": realized[1],
        "realized_uplift_hdi_high": realized[2],
        "uplift_in_interval": realized[1] <= promised_uplift <= realized[2],
        "note": None if deviation <= FOLLOW_TOLERANCE else (
            f"spend deviated {deviation:.0%} from the recommendation: the promise was made for another spend"
        ),
    }  # fmt: skip


def _unchanged(old: Mapping[str, object], new_actual: float, new_spend: float) -> bool:
    """A complete row whose actual KPI and spend have not changed since it was scored (no correction)."""
    return (
        old.get("status") == "complete"
        and old.get("counterfactual_kpi_mean") is not None
        and not pd.isna(old.get("counterfactual_kpi_mean"))
        and np.isclose(float(old["actual_kpi"]), new_actual, rtol=1e-12)
        and np.isclose(float(old["actual_spend"]), new_spend, rtol=1e-12)
    )


def build_scorecard(
    promises: pd.DataFrame,
    allocations: pd.DataFrame,
    rows: Mapping[str, pd.DataFrame],
    load_model: Callable[[str], StoredModel | None],
    previous: pd.DataFrame | None = None,
    max_draws: int | None = 1000,
) -> pd.DataFrame:
    """Every recommendation's scorecard row, with ``coverage_to_date`` per market.

    ``promises``: ``plan_summary`` rows with ``trigger``; ``allocations``: ``weekly_allocations`` rows of
    those optimizations; ``rows``: market -> modeling rows; ``load_model``: model_id -> stored model (or
    ``None``), called only for rows that need a counterfactual; ``previous``: the scorecard as last
    stored, whose complete rows are kept as they are while their actual KPI and spend are unchanged
    (a model is loaded only for newly completed or corrected recommendations).
    """
    kept = {} if previous is None or previous.empty else {
        r["optimization_id"]: r for r in previous.to_dict("records")
    }  # fmt: skip
    out = []
    for promise in promises.sort_values(["market", "created_at", "optimization_id"]).to_dict("records"):
        opt_id = promise["optimization_id"]
        mine = allocations[allocations["optimization_id"] == opt_id]
        market_rows = rows.get(str(promise["market"]), pd.DataFrame(columns=["market", "week", "kpi"]))
        quick = score(promise, mine, market_rows, None)  # actual and spend only: no model needed
        old = kept.get(opt_id)
        if quick["status"] != "complete":
            out.append(quick)
        elif old is not None and _unchanged(old, float(quick["actual_kpi"]), float(quick["actual_spend"])):
            out.append({k: old.get(k) for k in SCORECARD_COLUMNS} | {"trigger": promise.get("trigger")})
        else:
            out.append(score(promise, mine, market_rows, load_model(str(promise["model_id"])), max_draws))
    frame = pd.DataFrame(out, columns=SCORECARD_COLUMNS)
    # one type per column, whether a row was scored now (dates) or kept as stored (timestamps)
    for column in ("created_at", "first_week", "last_week"):
        frame[column] = pd.to_datetime(frame[column])
    return with_coverage(frame)


def with_coverage(frame: pd.DataFrame) -> pd.DataFrame:
    """``coverage_to_date``: per market, the share of complete recommendations up to each one (by
    creation) whose actual KPI fell inside the promised interval (missing before the first complete)."""
    frame = frame.sort_values(["market", "created_at", "optimization_id"]).reset_index(drop=True)
    complete = frame["status"] == "complete"
    hits = (complete & frame["in_interval"].eq(True)).astype(float)  # missing (not scored yet): no hit
    n = complete.astype(float).groupby(frame["market"]).cumsum()
    k = hits.groupby(frame["market"]).cumsum()
    frame["coverage_to_date"] = np.where(n > 0, k / n.where(n > 0, 1.0), np.nan)
    return frame


def coverage(frame: pd.DataFrame) -> pd.DataFrame:
    """Per market: complete recommendations, how many actuals fell inside the promised 94% interval
    (the coverage, nominally 94%), the same over the ones whose spend followed the recommendation, and
    the share whose promised uplift lay inside the realized uplift's interval."""
    columns = ["market", "recommendations", "complete", "in_interval", "coverage", "followed",
               "coverage_followed", "uplift_coverage"]  # fmt: skip
    out = []
    for market, group in frame.groupby("market", sort=True):
        done = group[group["status"] == "complete"]
        followed = done[done["followed"].fillna(False).astype(bool)]
        scored_uplift = done[done["uplift_in_interval"].notna()]

        def share(part: pd.DataFrame, column: str) -> float:
            return float(part[column].astype(bool).mean()) if len(part) else float("nan")

        out.append({
            "market": market, "recommendations": len(group), "complete": len(done),
            "in_interval": int(done["in_interval"].astype(bool).sum()),
            "coverage": share(done, "in_interval"),
            "followed": len(followed), "coverage_followed": share(followed, "in_interval"),
            "uplift_coverage": share(scored_uplift, "uplift_in_interval"),
        })  # fmt: skip
    return pd.DataFrame(out, columns=columns)
