"""Cross-validation charts for Dagster metadata: forecasts of the test weeks, ROAS by fold."""

from __future__ import annotations

import pandas as pd

from mmm_pipeline.charts import SHORT, markdown_image, plt


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
