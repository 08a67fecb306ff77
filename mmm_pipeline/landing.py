"""Landing files: find them, read them, validate them, and normalize them to model weeks.

Pure functions over files and DataFrames (no database, no Dagster), so every rule is testable alone.
A file that breaks a rule raises :class:`LandingFileError`, which names the file, the rows and the rule.

``lift_tests`` is optional: a project without that folder (or with an empty one) has no experiments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from .calendar import week_start
from .config import ProjectConfig
from .schemas import LANDING_RULES, REQUIRED_COLUMNS, ROW_RULE_COLUMNS, landing_schema, rule_of

KINDS = ("media", "kpi", "controls", "lift_tests")
SUFFIXES = {".csv", ".parquet", ".pq"}
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
        row_note = "data rows counted from 1 after the header" if path.suffix == ".csv" else "rows from 1"
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


def discover(landing_dir: Path) -> Iterator[tuple[str, Path]]:
    """Every landing file as (kind, path), in a stable order. Hidden and temporary files are skipped."""
    for kind in KINDS:
        folder = landing_dir / kind
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith((".", "~")):
                yield kind, path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_landing_file(path: Path) -> pd.DataFrame:
    """Read a CSV (every field as text, so validation sees what was delivered) or a Parquet file."""
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    else:
        frame = pd.read_parquet(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


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
    order = list(LANDING_RULES)
    return sorted(out, key=lambda v: (order.index(v.rule) if v.rule in order else len(order), v.column or ""))


def validate_landing_file(kind: str, path: Path, cfg: ProjectConfig) -> pd.DataFrame:
    """Read, validate and normalize one landing file.

    Returns rows with columns ``date, week, market`` plus the kind's fields (media: ``channel, spend,
    impressions``; kpi: ``kpi``; controls: ``control, value``) and ``row_number`` (1-based, for audit);
    lift tests: see :func:`_normalize_lift_tests`.
    Raises :class:`LandingFileError` naming every broken rule with its rows.
    """
    try:
        frame = read_landing_file(path)
    except Exception as exc:  # unreadable is a rule violation of its own, not a crash
        raise LandingFileError(path, kind, [RuleViolation("required_columns", [], [str(exc)[:200]])]) from exc
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
    try:
        landing_schema(kind, cfg).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        violations = _violations(errors)
        if kind == "controls":
            violations = [_label_hint(v, frame, cfg) for v in violations]
        raise LandingFileError(path, kind, violations) from None
    return _normalize_lift_tests(frame, cfg) if kind == "lift_tests" else _normalize(kind, frame, cfg)


def _normalize(kind: str, frame: pd.DataFrame, cfg: ProjectConfig) -> pd.DataFrame:
    dates = pd.to_datetime(frame["date"], format="mixed").dt.normalize()
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


def _label_hint(violation: RuleViolation, frame: pd.DataFrame, cfg: ProjectConfig) -> RuleViolation:
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


def _normalize_lift_tests(frame: pd.DataFrame, cfg: ProjectConfig) -> pd.DataFrame:
    """Rows ``row_number, week, market, channel, start_date, end_date, spend, delta_spend, lift, lift_se``.

    ``week`` is the model week holding ``end_date``: a fit uses the tests that ended by its last week,
    so that is the week a delivery touches (it is queued and rebuilt like a week of media).
    """
    dates = {c: pd.to_datetime(frame[c], format="mixed").dt.normalize() for c in ("start_date", "end_date")}
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
