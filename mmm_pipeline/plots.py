"""Small PNG charts for Dagster metadata: the UI renders them inline in an asset's markdown metadata."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # headless: runs in Dagster workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def _short(value: float, _position: object = None) -> str:
    """Axis numbers at a glance: 1.2k, 3.4M, 2B instead of a 1e8 offset above the axis."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


SHORT = FuncFormatter(_short)


def markdown_image(figure: plt.Figure, alt: str) -> str:
    """The figure as an inline (base64 PNG) markdown image; closes the figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


def fit_chart(fit_weekly: pd.DataFrame, title: str) -> str:
    """Actual KPI against the posterior mean and 94% predictive interval, week by week."""
    figure, ax = plt.subplots(figsize=(9, 3))
    weeks = pd.to_datetime(fit_weekly["week"])
    ax.fill_between(
        weeks, fit_weekly["predicted_hdi_low"], fit_weekly["predicted_hdi_high"], alpha=0.3, label="94% HDI"
    )
    ax.plot(weeks, fit_weekly["predicted_mean"], label="model")
    ax.plot(weeks, fit_weekly["actual"], "k.", markersize=3, label="actual")
    ax.set_title(title)
    ax.set_ylabel("KPI per week")
    ax.yaxis.set_major_formatter(SHORT)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return markdown_image(figure, title)


def roas_chart(channel_summary: pd.DataFrame, title: str) -> str:
    """Each channel's ROAS (posterior mean) with its 94% HDI."""
    table = channel_summary.sort_values("roas_mean")
    figure, ax = plt.subplots(figsize=(6, 0.4 * len(table) + 1))
    errors = [table["roas_mean"] - table["roas_hdi_low"], table["roas_hdi_high"] - table["roas_mean"]]
    ax.barh(table["channel"], table["roas_mean"], xerr=errors, capsize=3)
    ax.set_xlabel("ROAS (KPI per unit of spend)")
    ax.set_title(title)
    return markdown_image(figure, title)


def cv_forecast_chart(predictions: pd.DataFrame, title: str) -> str:
    """Each fold's out-of-sample forecast (mean and 94% interval) against the actual KPI."""
    figure, ax = plt.subplots(figsize=(9, 3))
    for fold, rows in predictions.groupby("fold"):
        weeks = pd.to_datetime(rows["week"])
        ax.fill_between(weeks, rows["lower_94"], rows["upper_94"], alpha=0.25)
        ax.plot(weeks, rows["mean"], label=f"fold {fold}")
    actual = predictions.drop_duplicates("week").sort_values("week")
    ax.plot(pd.to_datetime(actual["week"]), actual["observed"], "k.", markersize=3, label="actual")
    ax.set_title(title)
    ax.yaxis.set_major_formatter(SHORT)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return markdown_image(figure, title)


def roas_by_fold_chart(parameters: pd.DataFrame, title: str) -> str:
    """Each channel's ROAS (posterior mean and 94% HDI) in every fold: how much the answer moves."""
    roas = parameters[parameters["parameter"] == "roas"]
    channels = sorted(roas["channel"].unique())
    folds = sorted(roas["fold"].unique())
    figure, ax = plt.subplots(figsize=(7, 0.45 * len(channels) + 1))
    width = 0.8 / max(len(folds), 1)
    for k, fold in enumerate(folds):
        rows = roas[roas["fold"] == fold].set_index("channel").reindex(channels)
        y = [i + k * width for i in range(len(channels))]
        errors = [rows["mean"] - rows["hdi_low"], rows["hdi_high"] - rows["mean"]]
        ax.errorbar(rows["mean"], y, xerr=errors, fmt="o", markersize=3, capsize=2, label=f"fold {fold}")
    ax.set_yticks([i + 0.4 - width / 2 for i in range(len(channels))], channels)
    ax.set_xlabel("ROAS")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return markdown_image(figure, title)


def budget_chart(recommendation: pd.DataFrame, title: str, horizon: str = "per week") -> str:
    """Current against recommended spend per channel (a budget recommendation's ``recommendation`` table);
    ``horizon`` says what the amounts cover (``per week`` for a steady-state plan)."""
    table = recommendation.sort_values("recommended")
    figure, ax = plt.subplots(figsize=(7, 0.5 * len(table) + 1))
    y = range(len(table))
    ax.barh([i + 0.2 for i in y], table["current"], height=0.4, label="current", color="0.65")
    ax.barh([i - 0.2 for i in y], table["recommended"], height=0.4, label="recommended")
    for i, (rec, pct) in enumerate(zip(table["recommended"], table["change_pct"], strict=True)):
        if pd.notna(pct):
            ax.annotate(f"{pct:+.0f}%", (rec, i - 0.2), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(list(y), table["channel"])
    ax.set_xlabel(f"spend {horizon}")
    ax.xaxis.set_major_formatter(SHORT)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return markdown_image(figure, title)
