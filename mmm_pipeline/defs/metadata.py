"""Metadata helpers so every table asset shows the same things in the UI: rows, columns, a preview."""

from __future__ import annotations

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 10


def table_metadata(frame: pd.DataFrame, relation: str) -> dict[str, dg.MetadataValue | int | str]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )
    return {
        "dagster/row_count": len(frame),
        "dagster/relation_identifier": relation,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(frame.head(PREVIEW_ROWS).to_markdown(index=False) or "(empty)"),
    }
