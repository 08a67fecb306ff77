"""Wide tables (one column per channel spend, impressions and control) to landing files.

Spreadsheets, BI extracts and the case-study data are wide: one row per week, one column per metric.
The landing contract is long (``media``: date, market, channel, spend, impressions; ``kpi``: date,
market, <kpi>; ``controls``: date, market, control, value), so a small YAML mapping says which column
is what, and this module reshapes the table and writes landing CSVs. Files are written atomically, so
a sensor polling the landing folder never reads half a file, and ``split="week"`` writes one file per
week to replay a history as the weekly deliveries it stands for.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import Field, ValidationError, model_validator

from mmm_pipeline.ingest.categorical import level_key, slugify
from mmm_pipeline.settings import IDENTIFIER, WEEKDAYS, Identifier, StrictModel, Weekday

_TABLE_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}


class WideImportError(ValueError):
    """A mapping or table that cannot be imported; the message names the file, key or column."""


class KpiColumn(StrictModel):
    column: str
    name: Identifier = "sales"
    """The KPI column name in the landing file; must match ``kpi.name`` in the project config."""


class ChannelColumns(StrictModel):
    spend: str
    impressions: str | None = None


class ControlColumn(StrictModel):
    """A control's column, with its kind when the default (detect from the values) is not wanted."""

    column: str
    kind: Literal["numeric", "categorical"] | None = None
    """``None``: numeric, unless no filled cell of the column is a number; then the column holds labels
    and is imported as a categorical control, with a notice (see :func:`control_kinds`)."""
    max_levels: int = Field(12, ge=2, le=200)
    """A categorical column with more distinct labels than this is an error (the config's default cap)."""


class PrefixRule(StrictModel):
    """Every column starting with ``prefix`` becomes a control named by the column's slug."""

    prefix: str = Field(min_length=1)


class WideMapping(StrictModel):
    """Which column of a wide table is what; the YAML mapping file's top level."""

    date_column: str
    date_format: str | None = None
    """strftime format of the date column (e.g. '%d/%m/%Y'); default lets pandas parse ISO-like dates."""
    market_column: str | None = None
    market: Identifier = "all"
    """Market of every row when there is no ``market_column``."""
    kpi: KpiColumn | None = None
    channels: dict[Identifier, ChannelColumns] = Field(default_factory=dict)
    controls: dict[Identifier, str | ControlColumn] = Field(default_factory=dict)
    """Control name -> column, or ``{column, kind, max_levels}`` (kind ``categorical`` for labels)."""
    controls_from_prefix: list[PrefixRule] = Field(default_factory=list)
    """Applied after ``controls``, to columns the mapping does not use otherwise."""

    @model_validator(mode="after")
    def _maps_something(self) -> WideMapping:
        if self.kpi is None and not self.channels and not self.controls and not self.controls_from_prefix:
            raise ValueError("the mapping maps no column: give kpi, channels or controls")
        return self

    def named_columns(self) -> dict[str, str]:
        """Mapping key -> column for every column named explicitly (all must exist in the table)."""
        keys = {"date_column": self.date_column}
        if self.market_column:
            keys["market_column"] = self.market_column
        if self.kpi:
            keys["kpi.column"] = self.kpi.column
        for name, cols in self.channels.items():
            keys[f"channels.{name}.spend"] = cols.spend
            if cols.impressions:
                keys[f"channels.{name}.impressions"] = cols.impressions
        keys.update({f"controls.{name}": self.control_spec(name).column for name in self.controls})
        return keys

    def control_spec(self, name: str, column: str | None = None) -> ControlColumn:
        """The explicit entry of control ``name``, or a default one for ``column`` (kind detected)."""
        entry = self.controls.get(name, column)
        return entry if isinstance(entry, ControlColumn) else ControlColumn(column=str(entry))

    def control_columns(self, columns: Iterable[str]) -> dict[str, str]:
        """Control name -> column: the explicit ``controls``, then the prefix rules over ``columns``.

        A column the mapping already uses (including an explicit control, which may rename it) is not
        picked up again by a prefix, so both can be combined. Two columns ending up with one name is an
        error: silently keeping one would drop a control.
        """
        out = {name: self.control_spec(name).column for name in self.controls}
        used = set(self.named_columns().values())
        for column in columns:
            if column in used or not any(column.startswith(r.prefix) for r in self.controls_from_prefix):
                continue
            name = slugify(column)
            if not IDENTIFIER.match(name):
                raise WideImportError(f"column {column!r} gives control name {name!r}, not a safe identifier")
            if name in out:
                raise WideImportError(
                    f"columns {out[name]!r} and {column!r} both become control {name!r}: "
                    "map one of them explicitly under 'controls' with another name"
                )
            out[name] = column
        return out


def load_wide_mapping(path: str | os.PathLike[str]) -> WideMapping:
    """Read and validate a mapping YAML file; errors name the file and the offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise WideImportError(f"{path}: cannot read the mapping file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WideImportError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise WideImportError(f"{path}: the top level must be a mapping of keys")
    try:
        return WideMapping.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc']) or '(top level)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise WideImportError(f"{path}: {problems}") from None


def read_table(path: str | os.PathLike[str], mapping: WideMapping) -> pd.DataFrame:
    """Read a wide CSV or Parquet table; the date column stays text so ``date_format`` applies to it."""
    path = Path(path)
    if _TABLE_SUFFIXES[_table_suffix(path)] == "parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={mapping.date_column: str})


def wide_to_long(
    table: pd.DataFrame,
    mapping: WideMapping,
    source: str = "table",
    notify: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Reshape a wide table into the landing frames, keyed by kind; kinds the mapping lacks are absent.

    ``source`` names the table in error messages. Values are checked to be numbers here because a
    stray text cell in a wide column would otherwise surface far away, as a failed landing check.
    A control column of labels is categorical (:func:`control_kinds`); ``notify`` is told when that was
    detected rather than declared.
    """
    _check_columns(table, mapping, source)
    if table.empty:
        raise WideImportError(f"{source}: the table has no rows")
    keys = pd.DataFrame({"date": _dates(table, mapping, source)})
    if mapping.market_column:
        markets = table[mapping.market_column]
        if markets.isna().any():
            raise WideImportError(f"{source}: column {mapping.market_column!r} has empty market values")
        keys["market"] = markets.astype(str).str.strip()
    else:
        keys["market"] = mapping.market
    dupes = keys[keys.duplicated()]
    if not dupes.empty:
        first = dupes.iloc[0]
        raise WideImportError(
            f"{source}: {len(dupes)} rows repeat a date and market of an earlier row, "
            f"first {first['date']} / {first['market']}"
        )

    controls_of_table = set(mapping.control_columns(table.columns).values())

    def numbers(column: str) -> pd.Series:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = bad.to_numpy().argmax()
            raise WideImportError(
                f"{source}: column {column!r} holds {table[column].iloc[row]!r} on "
                f"{keys['date'].iloc[row]}, not a number"
                + (
                    f" (if the control's values are labels, map it as {{column: {column}, kind: "
                    "categorical})"
                    if column in controls_of_table
                    else ""
                )
            )
        return values.reset_index(drop=True)

    frames: dict[str, pd.DataFrame] = {}
    if mapping.channels:
        media = [
            keys.assign(
                channel=name,
                spend=numbers(cols.spend),
                **({"impressions": numbers(cols.impressions)} if cols.impressions else {}),
            )
            for name, cols in mapping.channels.items()
        ]
        frames["media"] = _by_date(pd.concat(media, ignore_index=True))
    if mapping.kpi:
        frames["kpi"] = _by_date(keys.assign(**{mapping.kpi.name: numbers(mapping.kpi.column)}))
    controls = mapping.control_columns(table.columns)
    if controls:
        kinds = control_kinds(table, mapping)
        long = []
        for name, column in controls.items():
            kind, detected = kinds[name]
            if kind == "numeric":
                long.append(keys.assign(control=name, value=numbers(column)))
                continue
            labels = _labels(table[column], name, mapping.control_spec(name, column), detected, source)
            if detected and notify:
                shown = ", ".join(repr(v) for v in sorted(labels.dropna().unique())[:6])
                notify(
                    f"column {column!r} holds labels ({shown}), not numbers: imported as categorical "
                    f"control {name!r}. Declare it in the project config as {{name: {name}, kind: "
                    "categorical} (--print-config prints it); empty cells and labels such as 'na' or "
                    "'none' are the weeks without a label"
                )
            # A week without a label needs no row: with the default fill it is the no-label group.
            long.append(keys.assign(control=name, value=labels)[labels.notna().to_numpy()])
        frames["controls"] = _by_date(pd.concat(long, ignore_index=True))
    return frames


def control_kinds(table: pd.DataFrame, mapping: WideMapping) -> dict[str, tuple[str, bool]]:
    """Each control's kind (``numeric`` or ``categorical``) and whether it was detected, not declared.

    Undeclared, a column is categorical when it has filled cells and none of them is a number (an
    ``events`` column of 'na', 'event1', 'event2'): importing it is what its author meant, and the
    notice says so. A column of numbers with a stray text cell stays numeric and fails on that cell.
    """
    out: dict[str, tuple[str, bool]] = {}
    for name, column in mapping.control_columns(table.columns).items():
        spec = mapping.control_spec(name, column)
        if spec.kind is not None:
            out[name] = (spec.kind, False)
            continue
        values = table[column].dropna()
        text = values.astype(str).str.strip()
        values = values[text != ""]
        labels = not values.empty and pd.to_numeric(values, errors="coerce").isna().all()
        out[name] = ("categorical", True) if labels else ("numeric", False)
    return out


def _labels(column: pd.Series, name: str, spec: ControlColumn, detected: bool, source: str) -> pd.Series:
    """A categorical column's labels, trimmed (empty cells NaN), within ``spec.max_levels``."""
    labels = column.astype("string").str.strip().astype(object).where(column.notna())
    labels = labels.where(labels != "").reset_index(drop=True)
    levels = labels.map(level_key).nunique()
    if levels > spec.max_levels:
        why = " (taken as labels because no cell is a number; if it is an id or free text, leave it out)"
        raise WideImportError(
            f"{source}: column {spec.column!r} (categorical control {name!r}) holds {levels} distinct "
            f"labels, more than max_levels {spec.max_levels}{why if detected else ''}: merge rare labels, "
            f"or map it as {{column: {spec.column}, kind: categorical, max_levels: {levels}}} and set "
            f"max_levels on the control in the project config"
        )
    return labels


def import_wide(
    table_path: str | os.PathLike[str],
    mapping: WideMapping | str | os.PathLike[str],
    landing_dir: str | os.PathLike[str],
    split: Literal["none", "week"] = "none",
    file_stem: str | None = None,
    week_start: Weekday = "monday",
    notify: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write a wide table as landing CSVs ``<landing>/<kind>/<stem>.csv``; returns the files written.

    ``mapping`` is a :class:`WideMapping` or the path of its YAML file. The stem defaults to the
    table's file name. With ``split="week"`` each kind gets one file per week, ``<stem>_<yyyy-mm-dd>.csv``
    named by the week's first day (weeks start on ``week_start``, as in the project's calendar).
    Existing files of the same name are replaced, so importing again is idempotent. ``notify`` is
    told of each control column detected as labels (see :func:`control_kinds`).
    """
    table_path = Path(table_path)
    if not isinstance(mapping, WideMapping):
        mapping = load_wide_mapping(mapping)
    suffix = _table_suffix(table_path)
    if split not in ("none", "week"):
        raise WideImportError(f"split must be 'none' or 'week', not {split!r}")
    stem = file_stem or table_path.name[: -len(suffix)]
    if not stem or Path(stem).name != stem:
        raise WideImportError(f"file stem {stem!r} must be a plain file name")
    frames = wide_to_long(read_table(table_path, mapping), mapping, source=str(table_path), notify=notify)
    landing = Path(landing_dir)
    parts: list[tuple[str, Path, pd.DataFrame]] = []  # (week or "", file, rows)
    for kind, frame in frames.items():
        if split == "none":
            parts.append(("", landing / kind / f"{stem}.csv", frame))
            continue
        dates = pd.to_datetime(frame["date"])
        weeks = dates - pd.to_timedelta((dates.dt.weekday - WEEKDAYS.index(week_start)) % 7, unit="D")
        for week, part in frame.groupby(weeks.dt.strftime("%Y-%m-%d")):
            parts.append((week, landing / kind / f"{stem}_{week}.csv", part))
    # Week by week, all kinds of a week together, in the order a weekly delivery would arrive.
    parts.sort(key=lambda item: item[0])
    for _, path, part in parts:
        _write_csv_atomic(part, path)
    return [path for _, path, _ in parts]


def config_entries(
    mapping: WideMapping, columns: Iterable[str], categorical: Iterable[str] = ()
) -> dict[str, list[dict[str, object]]]:
    """The ``channels:`` and ``controls:`` entries a project config needs to accept this import.

    Landing files carry the mapped names, so aliases only record the raw column each name came from
    (which also lets a long export that uses those labels through). ``columns`` are the table's, needed
    to expand ``controls_from_prefix``; ``categorical`` names the controls that hold labels
    (:func:`control_kinds`), whose entries say ``kind: categorical``.
    """
    categorical = set(categorical)

    def entry(name: str, label: str) -> dict[str, object]:
        return {"name": name, "aliases": [label] if label.strip().lower() != name else []}

    controls = []
    for name, column in mapping.control_columns(columns).items():
        item = entry(name, column)
        if name in categorical:
            item["kind"] = "categorical"
            limit = mapping.control_spec(name, column).max_levels
            if limit != ControlColumn.model_fields["max_levels"].default:
                item["max_levels"] = limit
        controls.append(item)
    return {
        "channels": [entry(name, cols.spend) for name, cols in mapping.channels.items()],
        "controls": controls,
    }


def _table_suffix(path: Path) -> str:
    for suffix in _TABLE_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return suffix
    raise WideImportError(f"{path}: unsupported table type; use one of {', '.join(_TABLE_SUFFIXES)}")


def _check_columns(table: pd.DataFrame, mapping: WideMapping, source: str) -> None:
    present = [str(c) for c in table.columns]
    for key, column in mapping.named_columns().items():
        if column not in table.columns:
            close = difflib.get_close_matches(column, present, n=3)
            hint = f"; close matches: {', '.join(map(repr, close))}" if close else ""
            raise WideImportError(f"{source}: no column {column!r} (mapping key {key}){hint}")


def _dates(table: pd.DataFrame, mapping: WideMapping, source: str) -> pd.Series:
    column = table[mapping.date_column]
    try:
        dates = pd.to_datetime(column, format=mapping.date_format)
    except (ValueError, TypeError) as exc:
        raise WideImportError(
            f"{source}: column {mapping.date_column!r} does not parse as dates: {exc}"
        ) from None
    if dates.isna().any():
        raise WideImportError(f"{source}: column {mapping.date_column!r} has empty dates")
    return dates.dt.strftime("%Y-%m-%d").reset_index(drop=True)


def _by_date(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in date order, keeping the mapping's channel/control order within a date (diff-friendly)."""
    return frame.sort_values(["date", "market"], kind="stable", ignore_index=True)


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a hidden temp file beside ``path``, then rename: readers see all of the file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, index=False)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a landing file must be readable like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
