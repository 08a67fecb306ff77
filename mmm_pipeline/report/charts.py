"""The report's charts (matplotlib, headless), as PNG bytes the templates embed or link.

Every chart takes frames exactly as :mod:`mmm_pipeline.report.data` read them from the BI catalog, so a
chart shows the same numbers as the tables beside it. Sizes are chosen for a 1000 px wide page and for
A4 print: text stays at least 8 pt once scaled to the page width.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from mmm_pipeline.charts import SHORT, plt, png_bytes, short_amount

DPI = 110
CURRENT, RECOMMENDED = "0.55", "#1f77b4"
#: Components of the decomposition other than channels, bottom-up, with their display names.
BASE_COMPONENTS = {"intercept": "baseline", "trend": "trend", "seasonality": "seasonality",
                   "controls": "controls"}  # fmt: skip


@dataclass(frozen=True)
class Chart:
    """One rendered chart: a file stem, a caption (alt text) and the PNG."""

    name: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


def from_figure(figure: plt.Figure, name: str, title: str) -> Chart:
    """A figure drawn elsewhere (e.g. :mod:`mmm_pipeline.monitoring.plots`) as a report chart."""
    return _render(figure, name, title)


def _render(figure: plt.Figure, name: str, title: str) -> Chart:
    return Chart(name, title, png_bytes(figure, DPI))


def _style(ax: plt.Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", alpha=0.3)


def roas_chart(channels: pd.DataFrame) -> Chart:
    """ROAS per channel with its 94% interval, marginal ROAS (the return of the next unit), and the
    break-even line at 1. When ROAS spans orders of magnitude the axis is logarithmic, so the line at 1
    and the weak channels stay visible beside a channel at 300."""
    table = channels.sort_values("roas_mean")
    figure, ax = plt.subplots(figsize=(7.5, 0.45 * len(table) + 1.4))
    y = np.arange(len(table))
    values = pd.concat([table["roas_hdi_high"], table["roas_mean"], table["mroas_mean"]])
    # the axis starts below the smallest estimate, not at the near-0 end of a wide interval
    positive = pd.concat([table["roas_mean"], table["mroas_mean"]])
    positive = positive[positive > 0]
    log = bool(len(positive)) and values.max() > 20 and values.max() / positive.min() > 50
    errors = [table["roas_mean"] - table["roas_hdi_low"], table["roas_hdi_high"] - table["roas_mean"]]
    left = 0.0
    if log:
        left = min(0.5, float(positive.min()) * 0.5)
        ax.set_xscale("log")
        # an interval reaching 0 ends at the axis
        errors[0] = np.minimum(errors[0], table["roas_mean"] - left)
    ax.barh(y, table["roas_mean"] - left, left=left, xerr=errors, capsize=3, color=RECOMMENDED, alpha=0.8,
            label="ROAS (94% interval)")  # fmt: skip
    ax.plot(table["mroas_mean"], y, "D", color="#d62728", markersize=5, label="marginal ROAS")
    ax.set_yticks(y, table["channel"])
    ax.axvline(1.0, color="#b42318", linewidth=1.6, linestyle="--", label="break-even (ROAS 1)")
    if log:
        ax.set_xlim(left=left)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.set_xlabel("KPI per unit of spend" + (" (log scale)" if log else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _style(ax)
    return _render(figure, "roas", "ROAS and marginal ROAS by channel")


def budget_chart(recommendations: pd.DataFrame, horizon: str = "per week") -> Chart:
    """Current against recommended spend per channel, with the change in %, channels top to bottom in
    the order given (the action list's); ``horizon`` says what the amounts cover."""
    table = recommendations.iloc[::-1]  # barh draws bottom-up
    figure, ax = plt.subplots(figsize=(7.5, 0.5 * len(table) + 1.2))
    y = np.arange(len(table))
    ax.barh(y + 0.2, table["current"], height=0.4, label="current", color=CURRENT)
    ax.barh(y - 0.2, table["recommended"], height=0.4, label="recommended", color=RECOMMENDED)
    for i, (rec, pct) in enumerate(zip(table["recommended"], table["change_pct"], strict=True)):
        if pd.notna(pct):
            ax.annotate(f"{pct:+.0f}%", (rec, i - 0.2), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(y, table["channel"])
    ax.set_xlabel(f"spend {horizon}")
    ax.xaxis.set_major_formatter(SHORT)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _style(ax)
    return _render(figure, "budget", "Current and recommended spend by channel")


def response_chart(curves: pd.DataFrame, marks: pd.DataFrame | None) -> Chart:
    """Each channel's steady-state weekly response (mean, 94% HDI) with current and recommended spend.

    ``marks``: ``channel, current_weekly, recommended_weekly`` (None without a recommendation).
    """
    channels = list(dict.fromkeys(curves["channel"]))
    cols = 3
    rows = -(-len(channels) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(9, 2.4 * rows), squeeze=False)
    for ax, channel in zip(axes.flat, channels, strict=False):
        curve = curves[curves["channel"] == channel]
        ax.fill_between(curve["weekly_spend"], curve["hdi_low"], curve["hdi_high"], alpha=0.25,
                        color=RECOMMENDED)  # fmt: skip
        ax.plot(curve["weekly_spend"], curve["mean"], color=RECOMMENDED)
        if marks is not None and channel in set(marks["channel"]):
            mark = marks.set_index("channel").loc[channel]
            for value, color, label in ((mark["current_weekly"], CURRENT, "current"),
                                        (mark["recommended_weekly"], "#d62728", "recommended")):  # fmt: skip
                ax.axvline(value, color=color, linestyle="--", linewidth=1.2, label=label)
        ax.set_title(channel, fontsize=11)
        ax.tick_params(labelsize=9)
        ax.xaxis.set_major_formatter(SHORT)
        ax.yaxis.set_major_formatter(SHORT)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(channels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    figure.supxlabel("weekly spend", fontsize=10)
    figure.supylabel("weekly contribution (KPI)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    return _render(figure, "response_curves", "Response curves with current and recommended weekly spend")


def adstock_chart(adstock: pd.DataFrame) -> Chart:
    """Share of a week's spend acting 0, 1, 2... weeks later, per channel (posterior mean)."""
    figure, ax = plt.subplots(figsize=(7.5, 3))
    for channel, rows in adstock.groupby("channel", sort=False):
        ax.plot(rows["lag"], rows["mean"], marker="o", markersize=3, label=channel)
    ax.set_xlabel("weeks after the spend")
    ax.set_ylabel("share of the effect")
    ax.legend(fontsize=8, ncol=3)
    _style(ax)
    return _render(figure, "adstock", "How long each channel's effect lasts (adstock weights)")


def _components(decomposition: pd.DataFrame) -> pd.DataFrame:
    """Weekly means, one column per component: base components first, then channels."""
    wide = decomposition.pivot_table(index="week", columns="component", values="mean", sort=False)
    wide.index = pd.to_datetime(wide.index)
    base = [c for c in BASE_COMPONENTS if c in wide.columns]
    return wide[base + [c for c in wide.columns if c not in BASE_COMPONENTS]].sort_index()


def decomposition_chart(decomposition: pd.DataFrame, fit_weekly: pd.DataFrame) -> Chart:
    """Weekly KPI split into components, stacked (negative parts below zero), with the actual KPI."""
    wide = _components(decomposition)
    figure, ax = plt.subplots(figsize=(9, 3.8))
    colors = plt.get_cmap("tab20").colors
    up = np.zeros(len(wide))
    down = np.zeros(len(wide))
    for i, column in enumerate(wide.columns):
        values = wide[column].to_numpy()
        pos, neg = np.clip(values, 0, None), np.clip(values, None, 0)
        color = colors[i % len(colors)]
        ax.fill_between(wide.index, up, up + pos, color=color, linewidth=0,
                        label=BASE_COMPONENTS.get(column, column))  # fmt: skip
        ax.fill_between(wide.index, down, down + neg, color=color, linewidth=0)
        up, down = up + pos, down + neg
    ax.plot(pd.to_datetime(fit_weekly["week"]), fit_weekly["actual"], "k-", linewidth=0.8, label="actual")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    ax.set_ylabel("KPI per week")
    ax.yaxis.set_major_formatter(SHORT)
    ax.spines[["top", "right"]].set_visible(False)
    return _render(figure, "decomposition", "Where the KPI came from, week by week")


def waterfall_chart(totals: pd.DataFrame) -> Chart:
    """Total contribution of each component over the window, as a waterfall ending in the total.

    ``totals``: ``component, label, total`` in display order. Positive steps are green, negative ones red
    and hatched (they take away), and every step is labelled with its value, so a step too small to see
    still reads.
    """
    figure, ax = plt.subplots(figsize=(9, 3.8))
    running = 0.0
    for i, row in enumerate(totals.itertuples()):
        negative = row.total < 0
        ax.bar(i, row.total, bottom=running, color="#d62728" if negative else "#2ca02c",
               hatch="//" if negative else None, edgecolor="white", linewidth=0.5)  # fmt: skip
        top = running + max(row.total, 0.0)
        ax.annotate(("−" if negative else "+") + short_amount(abs(row.total)), (i, top),
                    xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                    color="#b42318" if negative else "0.2")  # fmt: skip
        if i + 1 < len(totals):
            end = running + row.total
            ax.plot([i + 0.4, i + 0.6], [end, end], color="0.5", linewidth=0.6)
        running += row.total
    ax.bar(len(totals), running, color=RECOMMENDED)
    ax.annotate(short_amount(running), (len(totals), max(running, 0.0)), xytext=(0, 2),
                textcoords="offset points", ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_xticks(range(len(totals) + 1), [*totals["label"], "total"], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("KPI over the window")
    ax.yaxis.set_major_formatter(SHORT)
    ax.margins(y=0.08)
    ax.spines[["top", "right"]].set_visible(False)
    return _render(figure, "waterfall", "Total contribution by component (waterfall; red, hatched: negative)")


def roas_by_fold_chart(fold_parameters: pd.DataFrame, full: pd.DataFrame) -> Chart:
    """Each channel's ROAS in every CV fold (mean, 94% HDI) beside the full fit's: how much it moves."""
    roas = fold_parameters[fold_parameters["parameter"] == "roas"]
    channels = list(full.sort_values("roas_mean")["channel"])
    folds = sorted(roas["fold"].unique())
    figure, ax = plt.subplots(figsize=(7.5, 0.5 * len(channels) + 1.2))
    series = [(f"fold {f}", roas[roas["fold"] == f].rename(columns={"mean": "m"})) for f in folds]
    full_rows = full.rename(
        columns={"roas_mean": "m", "roas_hdi_low": "hdi_low", "roas_hdi_high": "hdi_high"}
    )
    series.append(("full fit", full_rows))
    width = 0.8 / len(series)
    for k, (label, frame) in enumerate(series):
        rows = frame.set_index("channel").reindex(channels)
        y = np.arange(len(channels)) + k * width
        errors = [rows["m"] - rows["hdi_low"], rows["hdi_high"] - rows["m"]]
        ax.errorbar(rows["m"], y, xerr=errors, fmt="o", markersize=3, capsize=2, label=label,
                    color="k" if label == "full fit" else None)  # fmt: skip
    ax.set_yticks(np.arange(len(channels)) + 0.4 - width / 2, channels)
    ax.set_xlabel("ROAS")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the data
    _style(ax)
    return _render(figure, "roas_by_fold", "ROAS across cross-validation folds")
