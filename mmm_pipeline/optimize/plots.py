"""The budget recommendation's chart for Dagster metadata: current against recommended spend."""

from __future__ import annotations

import pandas as pd

from mmm_pipeline.charts import SHORT, markdown_image, plt


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
