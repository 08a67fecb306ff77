"""Metadata helpers so every asset shows the same things in the UI: rows, columns, a preview, and figures
a person can read (``1.006``, ``1079763``; ``–`` for a missing value, as the report shows it)
instead of ``1.0063717687281377`` and ``nan``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import dagster as dg
import numpy as np
import pandas as pd

PREVIEW_ROWS = 10
#: Shown for a missing figure (NaN, None), as in the executive report.
MISSING = "–"


def ui_number(value: float) -> float | str:
    """A float rounded for reading: 4 significant digits below 1,000, whole units above (amounts of
    currency or KPI: cents say nothing there); ``–`` when missing."""
    value = float(value)
    if not math.isfinite(value):
        return MISSING
    if abs(value) >= 1000:
        return float(round(value))
    return float(f"{value:.4g}")


def ui_metadata(metadata: Mapping[str, object]) -> dict[str, object]:
    """``metadata`` with every plain float rounded (:func:`ui_number`) and NaN or None shown as ``–``;
    other values (ints, text, ``MetadataValue``s) as they are."""
    out: dict[str, object] = {}
    for key, value in metadata.items():
        if value is None or (isinstance(value, float | np.floating) and not isinstance(value, bool)):
            out[key] = MISSING if value is None else ui_number(value)
        elif isinstance(value, np.integer):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def markdown_table(frame: pd.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A frame as a Markdown table of readable text: each column formatted with its ``formats`` entry
    (a format spec, e.g. ``",.0f"``, ``"+.0%"``), other floats by :func:`ui_number`; missing values ``–``.
    Text is escaped so the UI's Markdown cannot swallow it (``<market>``, ``|``)."""
    formats = formats or {}

    def cell(column: str, value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            return MISSING
        if column in formats and isinstance(value, int | float | np.number):
            return format(value, formats[column])
        if isinstance(value, float | np.floating):
            shown = ui_number(value)
            if isinstance(shown, str):
                return shown
            return f"{int(shown):,}" if shown.is_integer() else f"{shown:,}"
        return md_text(str(value))

    if frame.empty:
        return "(empty)"
    text = pd.DataFrame({str(c): [cell(str(c), v) for v in frame[c].astype(object)] for c in frame.columns})
    return text.to_markdown(index=False, disable_numparse=True)


def md_text(text: str) -> str:
    """Plain text for a Markdown metadata entry or description: ``<``, ``>`` and ``|`` escaped (the UI
    renders Markdown, where ``<market>`` is an HTML tag that vanishes)."""
    return text.replace("\\", "\\\\").replace("<", "\\<").replace(">", "\\>").replace("|", "\\|")


def table_metadata(frame: pd.DataFrame, relation: str) -> dict[str, dg.MetadataValue | int | str]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )
    return {
        "dagster/row_count": len(frame),
        "dagster/relation_identifier": relation,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(markdown_table(frame.head(PREVIEW_ROWS))),
    }
