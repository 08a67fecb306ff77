"""The model's charts for Dagster metadata (fit and ROAS), rendered inline in the asset's markdown."""

from __future__ import annotations

import pandas as pd

from mmm_pipeline.charts import SHORT, markdown_image, plt


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
