"""Charts of continuous operation, as matplotlib figures: the assets turn them into inline markdown
images for the Dagster UI (``markdown_image``) and the executive report into embedded PNGs, so both show
the same drawing.

``tracking_chart``: forecast vs actual since the champion was fitted, with drift events marked.
``kpi_trend_chart``, ``allocation_chart``, ``roas_trend_chart``: the optimization history over time (a
trend needs two recommendations: callers show text instead below that, see :func:`optimizations`).
``scorecard_chart``: what each recommendation promised for its plan weeks against what happened.
"""

from __future__ import annotations

import pandas as pd

from mmm_pipeline.charts import SHORT, plt


def tracking_chart(rows: pd.DataFrame, title: str, events: pd.DataFrame | None = None) -> plt.Figure:
    """Actual KPI against the champion's forecast (mean, 50% and 94% intervals), misses marked, with
    rolling MAPE below; vertical lines at drift events' detected weeks."""
    rows = rows.sort_values("week")
    weeks = pd.to_datetime(rows["week"])
    figure, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True, height_ratios=[3, 1])
    ax.fill_between(weeks, rows["pred_94_low"], rows["pred_94_high"], alpha=0.2, label="94%")
    ax.fill_between(weeks, rows["pred_50_low"], rows["pred_50_high"], alpha=0.35, label="50%")
    ax.plot(weeks, rows["pred_mean"], label="forecast")
    inside = rows["in_94"].astype(bool).to_numpy()
    ax.plot(weeks[inside], rows["actual"][inside], "k.", label="actual")
    ax.plot(weeks[~inside], rows["actual"][~inside], "rx", label="outside 94%")
    ax2.plot(weeks, rows["rolling_mape"] * 100, color="C3")
    ax2.set_ylabel("rolling MAPE %")
    for frame in [] if events is None else [events]:
        for week in pd.to_datetime(frame["detected_week"]):
            ax.axvline(week, color="r", linestyle="--", linewidth=1)
            ax2.axvline(week, color="r", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.yaxis.set_major_formatter(SHORT)
    return figure


def optimizations(history: pd.DataFrame) -> int:
    """How many recommendations the history holds (a trend chart needs at least two)."""
    return int(history["optimization_id"].nunique()) if len(history) else 0


def _summaries(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop_duplicates("optimization_id").sort_values("created_at")


def kpi_trend_chart(history: pd.DataFrame, title: str) -> plt.Figure:
    """The model's forecast of each recommendation's plan weeks (KPI under the recommended allocation,
    with its 94% HDI), at the first plan week; recommendations recorded before the plan forecast existed
    have none and are left out."""
    s = _summaries(history)
    if "forecast_start" in s:
        s = s[s["forecast_start"].notna() & s["expected_kpi"].notna()]
    when = pd.to_datetime(s["forecast_start"]) if "forecast_start" in s else pd.to_datetime(s["created_at"])
    figure, ax = plt.subplots(figsize=(8, 3))
    ax.fill_between(when, s["expected_kpi_hdi_low"], s["expected_kpi_hdi_high"], alpha=0.3, label="94% HDI")
    ax.plot(when, s["expected_kpi"], "o-", label="forecast KPI of the plan weeks")
    for x, y, trigger in zip(when, s["expected_kpi"], s["trigger"], strict=True):
        ax.annotate(str(trigger), (x, y), xytext=(0, 5), textcoords="offset points", fontsize=6)
    ax.set_title(title)
    _legend_outside(ax)
    _dates_and_numbers(ax)
    return figure


def scorecard_chart(scorecard: pd.DataFrame, title: str) -> plt.Figure:
    """Each complete recommendation's promised KPI (94% HDI) against the actual KPI of its plan weeks,
    at the first plan week, with the counterfactual (the previous allocation) and misses marked."""
    s = scorecard[scorecard["status"] == "complete"].sort_values("first_week")
    when = pd.to_datetime(s["first_week"])
    figure, ax = plt.subplots(figsize=(8, 3))
    ax.fill_between(when, s["promised_kpi_hdi_low"], s["promised_kpi_hdi_high"], alpha=0.25,
                    label="promised 94% HDI")  # fmt: skip
    ax.plot(when, s["promised_kpi_mean"], "-", label="promised")
    ax.plot(when, s["counterfactual_kpi_mean"], ":", color="C2", label="counterfactual (previous allocation)")
    inside = s["in_interval"].astype(bool).to_numpy()
    ax.plot(when[inside], s["actual_kpi"][inside], "k.", label="actual")
    ax.plot(when[~inside], s["actual_kpi"][~inside], "rx", label="actual outside")
    ax.set_title(title)
    _legend_outside(ax)
    _dates_and_numbers(ax)
    return figure


def _legend_outside(ax: plt.Axes) -> None:
    """The legend right of the plot, where it cannot hide a point (a channel's latest mark, say)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _dates_and_numbers(ax: plt.Axes) -> None:
    """Readable axes: dates without overlapping labels, and 1.2M instead of an offset like 1e8."""
    ax.figure.autofmt_xdate()
    ax.yaxis.set_major_formatter(SHORT)


def allocation_chart(history: pd.DataFrame, title: str) -> plt.Figure:
    """Recommended spend per channel at each optimization (stacked)."""
    wide = history.pivot_table(index="created_at", columns="channel", values="recommended_spend").sort_index()
    figure, ax = plt.subplots(figsize=(8, 3))
    ax.stackplot(pd.to_datetime(wide.index), wide.fillna(0).T.to_numpy(), labels=list(wide.columns))
    ax.set_ylabel("recommended spend")
    ax.set_title(title)
    _legend_outside(ax)
    _dates_and_numbers(ax)
    return figure


def roas_trend_chart(history: pd.DataFrame, title: str) -> plt.Figure:
    """Each channel's ROAS at its recommended spend, optimization after optimization."""
    wide = history.pivot_table(index="created_at", columns="channel", values="roas_recommended").sort_index()
    figure, ax = plt.subplots(figsize=(8, 3))
    for channel in wide.columns:
        ax.plot(pd.to_datetime(wide.index), wide[channel], "o-", markersize=3, label=channel)
    ax.set_ylabel("ROAS at recommendation")
    ax.set_title(title)
    _legend_outside(ax)
    _dates_and_numbers(ax)
    return figure
