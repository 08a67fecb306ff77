"""The "model not yet trustworthy" page: what a market gets instead of an executive report while no fit
of it has passed the gate.

A report built on a model that failed its diagnostics would put numbers in front of a marketing lead
that nobody should act on; no page at all leaves them with a stack trace. This page says which rule the
latest fit missed, which parameters (and so which channels) are most responsible, what the automatic
remedies tried, and concrete next steps. It reads the same published BI catalog as the report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from .data import ReportDataError
from .render import Report, environment

#: The anchors the page renders (``html_problems`` checks each is present).
UNTRUSTED_SECTIONS = ["status", "attempts", "next-steps"]


@dataclass(frozen=True)
class UntrustedData:
    """The market's newest fit (``latest_model_runs`` row) and its sampling attempts."""

    market: str
    kpi: str
    run: pd.Series
    attempts: pd.DataFrame


def load_untrusted_data(bi_database: Path, market: str, kpi: str) -> UntrustedData:
    """Read the market's newest fit and its attempts from the BI catalog (read-only)."""
    if not bi_database.exists():
        raise ReportDataError(f"no BI catalog at {bi_database}: publish the models first")
    with duckdb.connect(str(bi_database), read_only=True) as bi:
        published = {r[0] for r in bi.execute("SELECT name FROM published_tables").fetchall()}
        if "latest_model_runs" not in published:
            raise ReportDataError(f"market {market}: no model run published in {bi_database}")
        runs = bi.execute("SELECT * FROM latest_model_runs WHERE market = ?", [market]).df()
        if runs.empty:
            raise ReportDataError(f"market {market}: no model of this market has been fitted yet")
        attempts = (
            bi.execute(
                "SELECT * FROM model_fit_attempts WHERE model_id = ? ORDER BY attempt",
                [str(runs.iloc[0]["model_id"])],
            ).df()
            if "model_fit_attempts" in published
            else pd.DataFrame()
        )
    return UntrustedData(market, kpi, runs.iloc[0], attempts)


def build_untrusted_page(data: UntrustedData, steps: list[str], now: dt.datetime | None = None) -> Report:
    """Render the page (HTML and Markdown) from the newest fit, its attempts and the next ``steps``."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    run = data.run
    blocked = str(run.get("promotion_blocked_by") or run.get("gate_failures") or "not promoted")
    attempts = data.attempts.to_dict("records")
    worst = attempts[-1].get("worst_parameters") if attempts else None
    ctx = {
        "market": data.market,
        "kpi": data.kpi,
        "generated_at": now,
        "model_id": str(run["model_id"]),
        "train_start": run.get("train_start"),
        "train_end": run.get("train_end"),
        "blocked_by": [b.strip() for b in blocked.split(";") if b.strip()],
        "worst_parameters": worst if isinstance(worst, str) else None,
        "attempts": attempts,
        "steps": steps,
        "sections": UNTRUSTED_SECTIONS,
    }
    env = environment()
    html = env.get_template("untrusted.html.j2").render(**ctx)
    markdown = env.get_template("untrusted.md.j2").render(**ctx)
    manifest = {
        "market": data.market,
        "model_id": None,
        "optimization_id": None,
        "page": "model_not_yet_trustworthy",
        "latest_model_id": str(run["model_id"]),
        "generated_at": now.isoformat(),
        "sections": UNTRUSTED_SECTIONS,
        "warnings": len(ctx["blocked_by"]),
    }
    return Report(html, markdown, [], UNTRUSTED_SECTIONS, manifest)
