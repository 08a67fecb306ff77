"""Render a market's report (HTML and Markdown from Jinja2 templates) and write it atomically.

The HTML is self-contained: charts are embedded as base64 PNGs and the stylesheet (screen and print)
is inline, so the file opens offline in any browser and prints cleanly. The Markdown version links the
same charts as PNG files in ``figures/`` beside it. A report folder
``<reports>/<market>/<date>/`` is written aside and renamed into place, so it is complete or absent;
``report.json`` records which champion and recommendation it shows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from ..monitoring import plots as monitoring_plots
from . import charts
from .content import SECTIONS, Thresholds, context, history_summary, recommendation_order, waterfall_totals
from .data import ReportData

MANIFEST = "report.json"


@dataclass(frozen=True)
class Report:
    """A rendered report: both texts, its charts and the ids it was built from."""

    html: str
    markdown: str
    charts: list[charts.Chart]
    sections: list[str]
    """Anchors of the sections rendered (tracked performance only when the catalog has rows)."""
    manifest: dict[str, object]


# --- number formats, shared by templates and tests -----------------------------------------------------


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt_num(value: object, digits: int = 0) -> str:
    """Thousands separators; ``digits`` decimals; an en dash for a missing value."""
    return "–" if _missing(value) else f"{float(value):,.{digits}f}"


def fmt_signed(value: object, digits: int = 0) -> str:
    return "–" if _missing(value) else f"{float(value):+,.{digits}f}"


def fmt_pct(value: object, digits: int = 0) -> str:
    """A share (0.25) as a percentage (25%)."""
    return "–" if _missing(value) else f"{float(value):.{digits}%}"


def fmt_signed_pct(value: object, digits: int = 1) -> str:
    """A value already in percent (12.5) with its sign (+12.5%)."""
    return "–" if _missing(value) else f"{float(value):+.{digits}f}%"


def fmt_ratio(value: object) -> str:
    """ROAS and similar ratios: two decimals."""
    return fmt_num(value, 2)


def fmt_day(value: object) -> str:
    """A date or timestamp as YYYY-MM-DD (week starts, training windows)."""
    return "–" if _missing(value) else str(pd.Timestamp(value).date())


def fmt_minute(value: object) -> str:
    """A timestamp to the minute (seconds and microseconds say nothing to a reader)."""
    return "–" if _missing(value) else f"{pd.Timestamp(value):%Y-%m-%d %H:%M}"


def fmt(value: object, kind: str) -> str:
    """Format by kind: ``ratio`` (ROAS), ``pct`` (a share, one decimal) or ``num`` (KPI, currency)."""
    return {"ratio": fmt_ratio, "pct": lambda v: fmt_pct(v, 1), "num": fmt_num}[kind](value)


FILTERS = {"num": fmt_num, "signed": fmt_signed, "pct": fmt_pct, "signed_pct": fmt_signed_pct,
           "ratio": fmt_ratio, "fmt": fmt, "day": fmt_day, "minute": fmt_minute}  # fmt: skip


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mmm_pipeline.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    return env


# --- building ------------------------------------------------------------------------------------------


def _charts(data: ReportData) -> list[charts.Chart]:
    out = [charts.roas_chart(data.channels)]
    marks = None
    if not data.recommendations.empty and data.plan is not None:
        weeks = max(int(data.plan["weeks"]), 1)
        marks = data.recommendations.assign(
            current_weekly=lambda f: f["current"] / weeks,
            recommended_weekly=lambda f: f["recommended"] / weeks,
        )[["channel", "current_weekly", "recommended_weekly"]]
        horizon = "per week" if data.plan["mode"] == "steady_state" else f"over the {weeks}-week plan"
        out.insert(0, charts.budget_chart(recommendation_order(data), horizon))
    out.append(charts.response_chart(data.response_curves, marks))
    out.append(charts.adstock_chart(data.adstock))
    out.append(charts.decomposition_chart(data.decomposition, data.fit_weekly))
    out.append(charts.waterfall_chart(waterfall_totals(data)))
    if not data.cv_fold_parameters.empty:
        out.append(charts.roas_by_fold_chart(data.cv_fold_parameters, data.channels))
    if not data.tracking.empty:
        events = data.drift_events if len(data.drift_events) else None
        out.append(charts.from_figure(
            monitoring_plots.tracking_chart(data.tracking, "", events),
            "tracking", "Tracked performance: forecast against actual (dashed lines: drift events)",
        ))  # fmt: skip
    if history_summary(data) is not None:
        for draw, name, title in (
            (monitoring_plots.kpi_trend_chart, "history_kpi", "Forecast KPI of the plan weeks"),
            (monitoring_plots.allocation_chart, "history_allocation", "Recommended allocation over time"),
            (monitoring_plots.roas_trend_chart, "history_roas", "ROAS at the recommended spend over time"),
        ):
            out.append(charts.from_figure(draw(data.history, ""), name, title))
    if not data.scorecard.empty and (data.scorecard["status"] == "complete").any():
        out.append(charts.from_figure(
            monitoring_plots.scorecard_chart(data.scorecard, ""), "scorecard",
            "Promised KPI (94% interval) against the actual KPI of the plan weeks",
        ))  # fmt: skip
    return out


def build_report(
    data: ReportData, thresholds: Thresholds | None = None, now: dt.datetime | None = None
) -> Report:
    """Render the market's report from its catalog data (no files written)."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    ctx = context(data, thresholds or Thresholds())
    rendered = _charts(data)
    tracked = not data.tracking.empty or history_summary(data) is not None or ctx["alarms"] is not None
    sections = [a for a, _ in SECTIONS if a != "tracking" or tracked]
    sections = [a for a in sections if a != "scorecard" or ctx["scorecard"] is not None]
    if data.plan is None:
        sections = [a for a in sections if a not in ("actions", "scenarios")]
    ctx |= {"generated_at": now, "sections_shown": sections, "section_titles": dict(SECTIONS)}
    env = environment()
    html = env.get_template("report.html.j2").render(
        **ctx, charts={c.name: {"title": c.title, "src": c.data_uri} for c in rendered}
    )
    markdown = env.get_template("report.md.j2").render(
        **ctx, charts={c.name: {"title": c.title, "src": f"figures/{c.name}.png"} for c in rendered}
    )
    manifest = {
        "market": data.market,
        "model_id": data.model_id,
        "optimization_id": None if data.plan is None else str(data.plan["optimization_id"]),
        "generated_at": now.isoformat(),
        "catalog": str(data.catalog),
        "sections": sections,
        "warnings": len(ctx["warnings"]),
    }
    return Report(html, markdown, rendered, sections, manifest)


# --- files ---------------------------------------------------------------------------------------------


def write_report(report: Report, reports_dir: Path, market: str, day: dt.date) -> Path:
    """Write ``<reports_dir>/<market>/<day>/`` (report.html, report.md, figures/, report.json) atomically;
    a report of the same day is replaced. Returns the folder."""
    folder = reports_dir / market / day.isoformat()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    (tmp / "figures").mkdir(parents=True)
    try:
        (tmp / "report.html").write_text(report.html, encoding="utf-8")
        (tmp / "report.md").write_text(report.markdown, encoding="utf-8")
        for chart in report.charts:
            (tmp / "figures" / f"{chart.name}.png").write_bytes(chart.png)
        (tmp / MANIFEST).write_text(json.dumps(report.manifest, indent=2))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def latest_report(reports_dir: Path, market: str) -> Path | None:
    """The market's newest report folder (dated folder names sort by date), or None."""
    folders = sorted(p for p in (reports_dir / market).glob("????-??-??") if (p / MANIFEST).exists())
    return folders[-1] if folders else None


def read_manifest(folder: Path) -> dict[str, object]:
    return json.loads((folder / MANIFEST).read_text())


#: An attribute or CSS reference that would make the browser fetch something over the network.
EXTERNAL_REFERENCE = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""", re.I
)


def html_problems(html: str, sections: list[str]) -> list[str]:
    """Why an HTML report would not stand alone or is incomplete: external references, missing sections."""
    problems = [f"external reference: {m.group(0)!r}" for m in EXTERNAL_REFERENCE.finditer(html)]
    problems += [f"section {s!r} missing" for s in sections if f'id="{s}"' not in html]
    return problems
