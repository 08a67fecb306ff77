"""Landing files: find them, read them, validate them, and normalize them to model weeks.

Pure functions over files and DataFrames (no database, no Dagster), so every rule is testable alone.
A file that breaks a rule raises :class:`LandingFileError`, which names the file, the rows and the rule.

``lift_tests`` is optional: a project without that folder (or with an empty one) has no experiments.

Every file in the landing folder is accounted for (:func:`discover`): files in a kind folder
(``media/``, ``kpi/``, ``controls/``, ``lift_tests/``) or any subfolder of one belong to that kind; files
anywhere else, in a format no reader knows, behind a symlink that leads out of the landing folder, or
symlinked folders are reported by :func:`layout_problem` and quarantined like any rejected file. Names
starting with '.' or '~' (editor and upload temporaries) are skipped.

Dates are read one format per file (:func:`read_dates`), never guessed row by row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mmm_pipeline.ingest.calendar import week_start
from mmm_pipeline.ingest.contract import InputContract
from mmm_pipeline.ingest.schemas import (
    LANDING_RULES,
    REQUIRED_COLUMNS,
    ROW_RULE_COLUMNS,
    landing_schema,
    rule_of,
)

KINDS = ("media", "kpi", "controls", "lift_tests")
#: The kind recorded for a file outside every kind folder (it is quarantined).
UNKNOWN_KIND = "unknown"
#: Readable landing formats, by how a file name ends (lower case).
FORMATS = (".csv", ".csv.gz", ".zip", ".parquet", ".pq", ".xlsx")
MAX_ROWS_LISTED = 10


@dataclass(frozen=True)
class RuleViolation:
    """One broken rule in one file: which rule, on which rows (1-based, as a person counts them)."""

    rule: str
    rows: list[int]
    examples: list[str] = field(default_factory=list)
    column: str | None = None
    hint: str | None = None
    """What to do about it, when the rule alone does not say (e.g. how to declare a categorical control)."""

    def describe(self) -> str:
        shown = ", ".join(str(r) for r in self.rows[:MAX_ROWS_LISTED])
        more = f" and {len(self.rows) - MAX_ROWS_LISTED} more" if len(self.rows) > MAX_ROWS_LISTED else ""
        where = f" in column '{self.column}'" if self.column else ""
        rows = f" at row(s) {shown}{more}" if self.rows else ""
        examples = f" (values: {', '.join(self.examples[:5])})" if self.examples else ""
        hint = f": {self.hint}" if self.hint else ""
        return f"rule '{self.rule}' ({LANDING_RULES.get(self.rule, '')}) failed{where}{rows}{examples}{hint}"


class LandingFileError(ValueError):
    """A landing file that breaks one or more rules. The message names file, rows and rules."""

    def __init__(self, path: Path, kind: str, violations: list[RuleViolation]) -> None:
        self.path = path
        self.kind = kind
        self.violations = violations
        tabular = path.name.lower().endswith((".csv", ".csv.gz", ".zip", ".xlsx"))
        row_note = "data rows counted from 1 after the header" if tabular else "rows from 1"
        lines = [f"{path} ({kind} file) was rejected ({row_note}):"]
        lines += [f"  - {v.describe()}" for v in violations]
        super().__init__("\n".join(lines))

    @property
    def rules(self) -> list[str]:
        return sorted({v.rule for v in self.violations})

    def report(self) -> dict:
        """A JSON-able error report, written beside the quarantined file."""
        return {
            "file": str(self.path),
            "kind": self.kind,
            "rules": self.rules,
            "violations": [
                {"rule": v.rule, "column": v.column, "rows": v.rows, "examples": v.examples, "hint": v.hint}
                for v in self.violations
            ],
            "message": str(self),
        }


def _hidden(name: str) -> bool:
    return name.startswith((".", "~"))


def discover(landing_dir: Path) -> Iterator[tuple[str, Path]]:
    """Every entry of the landing folder as (kind, path), in a stable order: files (symlinks included)
    and symlinked folders, which are never followed. Entries outside a kind folder have kind
    :data:`UNKNOWN_KIND`. Hidden and temporary names ('.', '~') are skipped, folders included."""
    if not landing_dir.is_dir():
        return
    for root, dirs, files in os.walk(landing_dir, followlinks=False):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        linked = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in linked]
        rel = base.relative_to(landing_dir).parts
        kind = rel[0] if rel and rel[0] in KINDS else UNKNOWN_KIND
        for name in sorted([*files, *linked]):
            if _hidden(name):
                continue
            top = base == landing_dir
            if top and name in KINDS and (base / name).is_symlink():
                # A kind folder may itself be a symlink (e.g. to a mounted export share): follow it once.
                yield from _walk_linked_kind(landing_dir, name)
                continue
            yield kind, base / name


def _walk_linked_kind(landing_dir: Path, kind: str) -> Iterator[tuple[str, Path]]:
    folder = landing_dir / kind
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        linked = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in linked]
        for name in sorted([*files, *linked]):
            if not _hidden(name):
                yield kind, base / name


def _kind_of(path: Path, landing_dir: Path) -> str:
    parts = path.relative_to(landing_dir).parts
    return parts[0] if len(parts) > 1 and parts[0] in KINDS else UNKNOWN_KIND


def _inside(path: Path, landing_dir: Path, kind: str) -> bool:
    """Whether a symlink's target lies in the landing folder (or the kind folder, if that is a link)."""
    target = path.resolve()
    roots = (
        {landing_dir.resolve(), (landing_dir / kind).resolve()} if kind in KINDS else {landing_dir.resolve()}
    )
    return any(target == root or root in target.parents for root in roots)


def layout_problem(landing_dir: Path, kind: str, path: Path) -> RuleViolation | None:
    """Why an entry found by :func:`discover` cannot be read as a landing file, or None if it can."""
    if path.is_symlink() and path.is_dir():
        return RuleViolation("landing_layout", [], ["a symlinked folder (not followed)"])
    if path.is_symlink() and not _inside(path, landing_dir, kind):
        return RuleViolation(
            "landing_layout", [], [f"a symlink to {os.readlink(path)}, outside the landing folder (not read)"]
        )
    if kind not in KINDS:
        return RuleViolation(
            "landing_layout", [], [f"outside the kind folders ({', '.join(k + '/' for k in KINDS)})"]
        )
    if not path.is_file():
        return RuleViolation("readable_format", [], ["not a regular file (or a broken symlink)"])
    if not path.name.lower().endswith(FORMATS):
        return RuleViolation("readable_format", [], [f"{path.name!r} is not in a landing format"])
    return None


def sha256_of(path: Path, landing_dir: Path | None = None) -> str:
    """The content's SHA-256. A symlink is identified by where it points (so its target is never read)
    unless it leads to a file inside ``landing_dir``."""
    digest = hashlib.sha256()
    inside = (
        landing_dir is not None and path.is_file() and _inside(path, landing_dir, _kind_of(path, landing_dir))
    )
    if path.is_symlink() and not inside:
        digest.update(b"symlink:" + os.fsencode(os.readlink(path)))
        return digest.hexdigest()
    if path.is_dir():
        digest.update(b"folder:" + os.fsencode(path.name))
        return digest.hexdigest()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_csv(source, compression: str | None = None) -> pd.DataFrame:
    return pd.read_csv(
        source,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        skipinitialspace=True,
        compression=compression,
    )


def _read_zip(path: Path) -> pd.DataFrame:
    with zipfile.ZipFile(path) as archive:
        members = [
            m
            for m in archive.infolist()
            if not m.is_dir() and not _hidden(Path(m.filename).name) and "__MACOSX" not in m.filename
        ]
        if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
            names = ", ".join(m.filename for m in members) or "nothing"
            raise ValueError(f"a .zip delivery must hold exactly one .csv file; this one holds {names}")
        with archive.open(members[0]) as handle:
            return _read_csv(io.BytesIO(handle.read()))


def _read_xlsx(path: Path) -> pd.DataFrame:
    sheets = pd.read_excel(path, sheet_name=None, dtype=str, keep_default_na=False, na_values=[""])
    filled = {name: frame for name, frame in sheets.items() if not frame.dropna(how="all").empty}
    if len(filled) > 1:
        raise ValueError(f"an Excel delivery must hold one sheet with data; this one has {', '.join(filled)}")
    frame = next(iter(filled.values()), next(iter(sheets.values())))
    return frame.apply(lambda col: col.str.strip() if col.dtype == object else col)


def read_landing_file(path: Path) -> pd.DataFrame:
    """Read a CSV (plain, gzip, or the one CSV in a zip) or an Excel sheet with every field as text, so
    validation sees what was delivered, or a Parquet file (typed)."""
    name = path.name.lower()
    if name.endswith(".csv"):
        frame = _read_csv(path)
    elif name.endswith(".csv.gz"):
        frame = _read_csv(path, compression="gzip")
    elif name.endswith(".zip"):
        frame = _read_zip(path)
    elif name.endswith(".xlsx"):
        frame = _read_xlsx(path)
    elif name.endswith((".parquet", ".pq")):
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"{path.name!r} is not in a landing format")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


# ---- dates: one format per file ------------------------------------------------------------------

_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?$"
)
ISO_FORMAT = "%Y-%m-%d"
#: Formats tried when none is declared, ISO first; dotted dates are day-first (the only convention).
DATE_FORMATS = (ISO_FORMAT, "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y", "%Y%m%d")


def _parse_as(text: pd.Series, fmt: str) -> pd.Series:
    """Dates of ``text`` in one format (NaT where a value is not in it). ISO also reads timestamps with
    a time and a zone as the calendar day they are written on (``2024-06-03T23:30:00-05:00`` is 3 June)."""
    if fmt == ISO_FORMAT:
        day = text.str.extract(_ISO, expand=False)
        return pd.to_datetime(day, format=ISO_FORMAT, errors="coerce")
    return pd.to_datetime(text, format=fmt, errors="coerce")


@dataclass
class DateReading:
    """Dates of a file read in one format: the parsed columns, the format, and broken rules."""

    columns: dict[str, pd.Series]
    fmt: str
    violations: list[RuleViolation]


def _typed_dates(series: pd.Series) -> pd.Series | None:
    """Dates from a typed column (Parquet, Excel cells): no format to guess; None if the column is text."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_localize(None).dt.normalize()
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.normalize()
    values = series.dropna()
    if len(values) and values.map(lambda v: isinstance(v, dt.date)).all():
        return pd.to_datetime(series.map(lambda v: None if pd.isna(v) else dt.date(v.year, v.month, v.day)))
    return None


def read_dates(frame: pd.DataFrame, columns: list[str], declared: str | None) -> DateReading:
    """Read the date ``columns`` of one file in a single format: ``declared`` (``validation.date_format``)
    or the one detected from all its dates together. A value not in that format breaks
    ``parseable_dates``; a file two formats read completely but differently breaks ``unambiguous_dates``
    on the rows where they disagree (the fix is to declare the format). Empty dates break
    ``missing_values``."""
    out: dict[str, pd.Series] = {}
    violations: list[RuleViolation] = []
    texts: dict[str, pd.Series] = {}
    for column in columns:
        series = frame[column]
        missing = series.isna() | series.astype("string").str.strip().eq("").fillna(True)
        if missing.any():
            rows = [int(i) + 1 for i in np.flatnonzero(missing.to_numpy())]
            violations.append(RuleViolation("missing_values", rows, column=column))
        typed = _typed_dates(series)
        if typed is not None:
            out[column] = typed
        else:
            texts[column] = series.astype("string").str.strip().where(~missing)
    if not texts:
        return DateReading(out, "typed", violations)
    every = pd.concat(list(texts.values()), ignore_index=True).dropna()
    if declared:
        fmt = declared if declared != ISO_FORMAT else ISO_FORMAT
    else:
        readings = {f: _parse_as(every, f) for f in DATE_FORMATS}
        fitting = [f for f, parsed in readings.items() if parsed.notna().all()]
        if ISO_FORMAT in fitting or len(fitting) == 1:
            fmt = fitting[0]
        elif fitting:
            fmt = fitting[0]
            first = readings[fmt]
            disagree = pd.Series(False, index=every.index)
            for other in fitting[1:]:
                disagree |= readings[other] != first
            if disagree.any():
                for column, text in texts.items():
                    parsed = {f: _parse_as(text, f) for f in fitting}
                    differs = pd.Series(False, index=text.index)
                    for f in fitting[1:]:
                        differs |= (parsed[f] != parsed[fitting[0]]) & text.notna()
                    rows = [int(i) + 1 for i in np.flatnonzero(differs.to_numpy())]
                    examples = [
                        f"{text.iloc[r - 1]!r} = "
                        + " or ".join(f"{parsed[f].iloc[r - 1]:%d %b %Y} ({f})" for f in fitting)
                        for r in rows[:3]
                    ]
                    if rows:
                        violations.append(RuleViolation("unambiguous_dates", rows, examples, column=column))
                for column, text in texts.items():
                    out[column] = _parse_as(text, fmt)  # so the other rules still see dates
                return DateReading(out, "ambiguous", violations)
        else:
            # No format reads every date: the one reading the most decides, the rest are reported.
            fmt = max(DATE_FORMATS, key=lambda f: (readings[f].notna().sum(), -DATE_FORMATS.index(f)))
    for column, text in texts.items():
        parsed = _parse_as(text, fmt)
        bad = parsed.isna() & text.notna()
        if bad.any():
            rows = [int(i) + 1 for i in np.flatnonzero(bad.to_numpy())]
            examples = [f"{v!r} (the file's format is {fmt})" for v in text[bad].head(5)]
            violations.append(RuleViolation("parseable_dates", rows, examples, column=column))
        out[column] = parsed
    return DateReading(out, fmt, violations)


def _map_labels(series: pd.Series, aliases: dict[str, str]) -> pd.Series:
    """Configured name for each raw label (case-insensitive); unknown labels are kept as delivered."""
    labels = series.astype("string").str.strip()
    return labels.str.lower().map(aliases).fillna(labels).astype(object)


def _violations(errors: pa.errors.SchemaErrors) -> list[RuleViolation]:
    cases = errors.failure_cases.copy()
    cases["rule"] = cases["check"].astype(str).map(rule_of)
    judged = cases["check"].astype(str).map(ROW_RULE_COLUMNS)
    cases = cases[judged.isna() | (cases["column"] == judged)]
    out: list[RuleViolation] = []
    for (rule, column), group in cases.groupby(["rule", cases["column"].fillna("")], sort=False):
        index = pd.to_numeric(group["index"], errors="coerce").dropna().astype(int)
        rows = sorted({i + 1 for i in index})
        examples = [] if rule == "required_columns" else sorted({repr(v) for v in group["failure_case"]})
        if rule == "required_columns":
            column = ", ".join(sorted(group["failure_case"].astype(str)))
        out.append(RuleViolation(rule=rule, rows=rows, examples=examples[:5], column=column or None))
    return out


def validate_landing_file(kind: str, path: Path, cfg: InputContract) -> pd.DataFrame:
    """Read, validate and normalize one landing file.

    Returns rows with columns ``date, week, market`` plus the kind's fields (media: ``channel, spend,
    impressions``; kpi: ``kpi``; controls: ``control, value``) and ``row_number`` (1-based, for audit);
    lift tests: see :func:`_normalize_lift_tests`.
    Raises :class:`LandingFileError` naming every broken rule with its rows.
    """
    try:
        frame = read_landing_file(path)
    except Exception as exc:  # unreadable is a rule violation of its own, not a crash
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise LandingFileError(path, kind, [RuleViolation("readable_format", [], [reason])]) from None
    if frame.empty:
        raise LandingFileError(path, kind, [RuleViolation("no_empty_files", [])])
    required = REQUIRED_COLUMNS[kind] + ((cfg.kpi.name,) if kind == "kpi" else ())
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise LandingFileError(
            path, kind, [RuleViolation("required_columns", [], [], column=", ".join(missing))]
        )
    if "market" not in frame.columns:
        frame["market"] = "all"
    frame["market"] = frame["market"].astype("string").str.strip().astype(object)
    if kind in ("media", "lift_tests"):
        frame["channel"] = _map_labels(frame["channel"], cfg.channel_aliases())
    elif kind == "controls":
        frame["control"] = _map_labels(frame["control"], cfg.control_aliases())
    date_columns = ["start_date", "end_date"] if kind == "lift_tests" else ["date"]
    dates = read_dates(frame, date_columns, cfg.validation.date_format)
    for column, parsed in dates.columns.items():
        frame[column] = parsed
    violations = list(dates.violations)
    try:
        landing_schema(kind, cfg).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        found = _violations(errors)
        if kind == "controls":
            found = [_label_hint(v, frame, cfg) for v in found]
        violations += found
    if violations:
        raise LandingFileError(path, kind, _ordered(violations))
    return _normalize_lift_tests(frame, cfg) if kind == "lift_tests" else _normalize(kind, frame, cfg)


def _ordered(violations: list[RuleViolation]) -> list[RuleViolation]:
    order = list(LANDING_RULES)
    return sorted(
        violations, key=lambda v: (order.index(v.rule) if v.rule in order else len(order), v.column or "")
    )


def _normalize(kind: str, frame: pd.DataFrame, cfg: InputContract) -> pd.DataFrame:
    dates = frame["date"]
    out = pd.DataFrame(
        {
            "row_number": range(1, len(frame) + 1),
            "date": dates,
            "week": week_start(dates, cfg.calendar.week_start_index),
            "market": frame["market"].astype(str),
        }
    )
    if kind == "media":
        out["channel"] = frame["channel"].astype(str)
        out["spend"] = pd.to_numeric(frame["spend"]).astype(float)
        impressions = frame["impressions"] if "impressions" in frame.columns else pd.Series(index=frame.index)
        out["impressions"] = pd.to_numeric(impressions, errors="coerce").astype(float)
    elif kind == "kpi":
        out["kpi"] = pd.to_numeric(frame[cfg.kpi.name]).astype(float)
    else:
        out["control"] = frame["control"].astype(str)
        # A categorical control's value is its label, kept as delivered (trimmed); value stays empty.
        categorical = frame["control"].isin(cfg.categorical_controls)
        out["value"] = pd.to_numeric(frame["value"].where(~categorical), errors="coerce").astype(float)
        out["label"] = frame["value"].astype("string").str.strip().astype(object).where(categorical, None)
    return out


def _label_hint(violation: RuleViolation, frame: pd.DataFrame, cfg: InputContract) -> RuleViolation:
    """A ``numeric_values`` failure in a controls file, with how to declare the controls that hold labels.

    Labels in a numeric control are not guessed into a categorical one: the config says what the model
    has, and a stray text cell in a price column must not turn it into a categorical control.
    """
    if violation.rule != "numeric_values":
        return violation
    rows = frame.iloc[[r - 1 for r in violation.rows]]
    named = [c for c in dict.fromkeys(rows["control"]) if c in cfg.control_names]
    if not named:
        return violation
    entries = ", ".join(f"{{name: {c}, kind: categorical}}" for c in named)
    hint = (
        f"control(s) {', '.join(map(repr, named))} hold text, not numbers. If the values are labels "
        f"(events, promotions, holidays by name), declare them in the config's controls as {entries} "
        "(README, 'Categorical controls'); otherwise correct the values"
    )
    return replace(violation, hint=hint)


def _normalize_lift_tests(frame: pd.DataFrame, cfg: InputContract) -> pd.DataFrame:
    """Rows ``row_number, week, market, channel, start_date, end_date, spend, delta_spend, lift, lift_se``.

    ``week`` is the model week holding ``end_date``: a fit uses the tests that ended by its last week,
    so that is the week a delivery touches (its hash changes and it is rebuilt like a week of media).
    """
    dates = {c: frame[c] for c in ("start_date", "end_date")}
    out = pd.DataFrame(
        {
            "row_number": range(1, len(frame) + 1),
            "week": week_start(dates["end_date"], cfg.calendar.week_start_index),
            "market": frame["market"].astype(str),
            "channel": frame["channel"].astype(str),
            **dates,
        }
    )
    for column in ("spend", "delta_spend", "lift", "lift_se"):
        out[column] = pd.to_numeric(frame[column]).astype(float)
    return out


# ---- magnitudes against the history already loaded ----------------------------------------------

#: Columns of the history :func:`check_history` compares with (built by the ingestion scan).
HISTORY_COLUMNS = ("market", "series", "n_weeks", "max_week", "median_week")


def check_history(
    kind: str, rows: pd.DataFrame, history: pd.DataFrame, cfg: InputContract
) -> tuple[list[RuleViolation], list[RuleViolation]]:
    """``(errors, warnings)`` for a validated file's weeks against the history already loaded.

    ``history`` has one row per (market, series) (series: the channel, or ``kpi``): weeks with a value
    above 0, the biggest week and the median of those weeks. Each (market, series, week) total of the
    file is judged: above ``history_ceiling_multiple`` x the biggest week breaks ``within_history``
    (an error or a warning, per ``history_ceiling_action``); media spend above 0 but below
    ``history_floor_fraction`` x the median week warns ``spend_far_below_history``. Series with fewer
    than ``history_min_weeks`` weeks above 0 are not judged (nothing to compare with yet).
    """
    rules = cfg.validation
    if kind not in ("media", "kpi") or history.empty or rows.empty:
        return [], []
    value = "spend" if kind == "media" else "kpi"
    series = rows["channel"] if kind == "media" else pd.Series("kpi", index=rows.index)
    weekly = (
        rows.assign(series=series)
        .groupby(["market", "series", "week"], sort=True)
        .agg(total=(value, "sum"), rows=("row_number", list))
        .reset_index()
        .merge(history, on=["market", "series"])
    )
    weekly = weekly[weekly["n_weeks"] >= rules.history_min_weeks]
    found: dict[str, list[str]] = {"within_history": [], "spend_far_below_history": []}
    found_rows: dict[str, list[int]] = {"within_history": [], "spend_far_below_history": []}
    for week in weekly.itertuples():
        label = f"{week.market}/{week.series} week {week.week:%Y-%m-%d}: {week.total:,.6g}"
        if rules.history_ceiling_multiple and week.total > rules.history_ceiling_multiple * week.max_week:
            found["within_history"].append(
                f"{label} > {rules.history_ceiling_multiple:g} x {week.max_week:,.6g}"
            )
            found_rows["within_history"] += week.rows
        elif (
            kind == "media"
            and rules.history_floor_fraction
            and 0 < week.total < rules.history_floor_fraction * week.median_week
        ):
            found["spend_far_below_history"].append(
                f"{label} < {rules.history_floor_fraction:g} x median {week.median_week:,.6g}"
            )
            found_rows["spend_far_below_history"] += week.rows
    column = "spend" if kind == "media" else cfg.kpi.name
    violations = {
        rule: RuleViolation(rule, sorted(found_rows[rule]), found[rule][:5], column=column)
        for rule in found
        if found[rule]
    }
    errors, warnings = [], []
    if "within_history" in violations:
        (errors if rules.history_ceiling_action == "reject" else warnings).append(
            violations["within_history"]
        )
    if "spend_far_below_history" in violations:
        warnings.append(violations["spend_far_below_history"])
    return errors, warnings
