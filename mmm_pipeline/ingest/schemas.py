"""pandera schemas: the rules a landing file and the modeling table must satisfy.

Each check carries the *rule name* users see in errors, quarantine reports and Dagster asset checks, so
one name means one rule everywhere. Landing files are validated as read (strings for CSV), after the
market column is defaulted and channel/control labels are mapped to configured names.

Lift tests (experiment results, :mod:`mmm_pipeline.model.calibration`) are a landing kind of their own:
a test the model cannot use (a channel it does not have, no spend change, a zero standard error) is
rejected on arrival, with its row, instead of failing a refit weeks later.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mmm_pipeline.ingest.contract import InputContract

#: Every landing-file rule, in the order they are reported. Names are shown as Dagster asset checks.
LANDING_RULES: dict[str, str] = {
    "landing_layout": (
        "a landing file must sit in a kind folder (media/, kpi/, controls/, lift_tests/) or a subfolder "
        "of one; a symlink may not lead out of the landing folder, and symlinked folders are not followed"
    ),
    "readable_format": (
        "a landing file must be CSV (.csv, .csv.gz, or a .zip holding one .csv), Parquet (.parquet, .pq) "
        "or Excel (.xlsx with one sheet)"
    ),
    "no_empty_files": "a landing file must hold at least one data row",
    "required_columns": "a landing file must have the columns of its kind",
    "missing_values": "date, market, channel/control and value fields (any lift-test field) may not be empty",
    "parseable_dates": (
        "every date must be a calendar date in the file's one date format (validation.date_format, "
        "else the format detected from all its dates; ISO yyyy-mm-dd recommended)"
    ),
    "unambiguous_dates": (
        "a file's dates must read one way only: these rows mean different days under two formats, so "
        "declare the format in the config, e.g. validation: {date_format: '%d/%m/%Y'}"
    ),
    "identifier_names": (
        "market names (and channel/control names admitted without configuration) must be identifiers: "
        "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63 characters, no '..'"
    ),
    "nonnegative_numeric_spend": "spend and impressions must be numbers >= 0",
    "numeric_values": "KPI and control values must be numbers",
    "finite_numbers": (
        "every number (spend, impressions, KPI, control value, lift-test field) must be finite: "
        "no inf, -inf, Infinity or NaN"
    ),
    "plausible_magnitude": "no number may exceed validation.max_value in size",
    "nonnegative_kpi": "the KPI may not be negative (unless validation.allow_negative_kpi is set)",
    "within_history": (
        "a week's spend per channel, or KPI per market, may not exceed validation.history_ceiling_multiple "
        "times its biggest week so far (validation.history_ceiling_action: reject or warn)"
    ),
    "spend_far_below_history": (
        "a warning: a week's spend is above 0 but below validation.history_floor_fraction of the "
        "channel's median spending week"
    ),
    "end_not_before_start": "a lift test's end_date may not be before its start_date",
    "nonnegative_tested_spend": "a lift test's spend + delta_spend (the level it tested) must be >= 0",
    "nonzero_delta_spend": "a lift test's delta_spend may not be 0 (no spend change, no lift to measure)",
    "positive_lift_se": "a lift test's lift_se (standard error of its lift) must be > 0",
    "unique_keys": (
        "no two rows may share (date, market, channel/control); "
        "lift tests: (market, channel, start_date, end_date, spend, delta_spend)"
    ),
    "known_channels": (
        "channels must be configured (name or alias); media files may name others when "
        "validation.allow_unknown_channels is set, lift tests never (the model has no such channel)"
    ),
    "known_controls": "controls must be configured (name or alias) unless unknown controls are allowed",
    "known_markets": "markets must be listed in the config when the config lists markets",
    "no_future_dates": "no row may be dated after today (the as-of date)",
    "dates_within_calendar": "no row may be dated before calendar.start",
}

#: Rules whose failure only warns: the file is loaded and the warning shown with its rows.
WARNING_RULES = frozenset({"spend_far_below_history"})

#: Names from data (markets; channels and controls admitted without configuration) become partition
#: keys, SQL values and parts of file paths, so they must look like this (and hold no '..').
DATA_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def is_identifier(name: str) -> bool:
    """Whether a name from data is safe as a partition key and a path component."""
    return bool(DATA_IDENTIFIER.match(name)) and ".." not in name


#: pandera's built-in check names mapped onto our rule names.
_BUILTIN_RULES = {
    "column_in_dataframe": "required_columns",
    "multiple_fields_uniqueness": "unique_keys",
    "field_uniqueness": "unique_keys",
    "not_nullable": "missing_values",
    "numeric_control_values": "numeric_values",
}

REQUIRED_COLUMNS = {
    "media": ("date", "channel", "spend"),
    "kpi": ("date",),  # plus the configured KPI column
    "controls": ("date", "control", "value"),
    "lift_tests": ("channel", "start_date", "end_date", "spend", "delta_spend", "lift", "lift_se"),
}

#: Rules that compare two fields of a row, and the field an error names: pandera reports a row check
#: once per column of the file, and only the judged field's value says what is wrong.
ROW_RULE_COLUMNS = {
    "end_not_before_start": "end_date",
    "nonnegative_tested_spend": "delta_spend",
    "numeric_control_values": "value",
}


def rule_of(check_name: str) -> str:
    """The rule a pandera failure case belongs to."""
    return _BUILTIN_RULES.get(check_name, check_name)


def _dates(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, errors="coerce", format="mixed")


def _date_checks(cfg: InputContract) -> list[pa.Check]:
    """Range rules on dates already read by :func:`mmm_pipeline.ingest.landing.read_dates` (which reports the
    empty and unparseable ones itself, with the values as delivered)."""
    today = pd.Timestamp(cfg.today())
    start = pd.Timestamp(cfg.calendar.start)
    return [
        pa.Check(lambda s: ~(_dates(s) > today), name="no_future_dates"),
        pa.Check(lambda s: ~(_dates(s) < start), name="dates_within_calendar"),
    ]


def _nonnegative(series: pd.Series) -> pd.Series:
    values = _number(series)
    return values.notna() & (values >= 0)


def _number(series: pd.Series) -> pd.Series:
    """Numbers as floats; anything else NaN. Rules on a value's sign or size use it, and pass NaN: a
    field that is not a finite number already broke ``finite_numbers`` and is not reported twice.
    Text too big for a float ('1e999') is infinite, as Python reads it, not 'not a number'."""
    values = pd.to_numeric(series, errors="coerce").astype(float)
    if series.dtype == object:
        text = series.astype("string").str.strip()
        overflow = values.isna() & text.str.fullmatch(_SCIENTIFIC).fillna(False).astype(bool)
        if overflow.any():
            values[overflow] = text[overflow].map(float)
    return values


_SCIENTIFIC = r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+"


_NAN_WORDS = ("nan", "+nan", "-nan")


def _non_finite(series: pd.Series) -> pd.Series:
    """Infinite numbers ('inf', '-Infinity', '1e999') and NaN written out as text ('NaN')."""
    words = series.astype("string").str.strip().str.lower().isin(_NAN_WORDS).fillna(False).astype(bool)
    return pd.Series(np.isinf(_number(series)), index=series.index) | words


def _no_infinity(series: pd.Series) -> pd.Series:
    return ~_non_finite(series)


def _landing_nonnegative(series: pd.Series) -> pd.Series:
    """A number >= 0; a non-finite value broke ``finite_numbers`` and is not reported twice."""
    return _nonnegative(series) | _non_finite(series)


def _numeric(series: pd.Series) -> pd.Series:
    return _number(series).notna() | _non_finite(series)


def _plausible(cfg: InputContract) -> pa.Check:
    limit = cfg.validation.max_value
    return pa.Check(
        lambda s: ~((_number(s).abs() > limit) & np.isfinite(_number(s))), name="plausible_magnitude"
    )


def _landing_number_checks(cfg: InputContract, sign_rule: pa.Check | None) -> list[pa.Check]:
    checks = [pa.Check(_no_infinity, name="finite_numbers"), _plausible(cfg)]
    return checks + ([sign_rule] if sign_rule is not None else [])


def _identifiers(series: pd.Series) -> pd.Series:
    return series.astype(str).map(is_identifier).astype(bool)


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(_number(series)), index=series.index)


def _end_not_before_start(frame: pd.DataFrame) -> pd.Series:
    return ~(_dates(frame["end_date"]) < _dates(frame["start_date"]))


def _nonnegative_tested_spend(frame: pd.DataFrame) -> pd.Series:
    return ~(_number(frame["spend"]) + _number(frame["delta_spend"]) < 0)


def _member_of(names: list[str], rule: str) -> pa.Check:
    allowed = set(names)
    return pa.Check(lambda s: s.isin(allowed), name=rule)


def _market_column(cfg: InputContract) -> pa.Column:
    if cfg.markets:
        checks = [_member_of(cfg.markets, "known_markets")]
    else:
        checks = [pa.Check(_identifiers, name="identifier_names")]
    return pa.Column(None, checks=checks, nullable=False)


def _label_checks(names: list[str], allow_unknown: bool, rule: str) -> list[pa.Check]:
    """Configured names only, or (when unknown labels are allowed) any identifier."""
    if allow_unknown:
        return [pa.Check(_identifiers, name="identifier_names")]
    return [_member_of(names, rule)]


def landing_schema(kind: str, cfg: InputContract) -> pa.DataFrameSchema:
    """The schema a landing file of ``kind`` (media, kpi, controls, lift_tests) is validated against.

    No dtype is imposed: CSV fields arrive as text and Parquet columns typed, and the checks parse both.
    Dates arrive already read (one format per file) by :func:`mmm_pipeline.ingest.landing.read_dates`.
    """
    if kind == "lift_tests":
        return lift_test_schema(cfg)
    date = pa.Column(None, checks=_date_checks(cfg), nullable=True)
    spend_sign = pa.Check(_landing_nonnegative, name="nonnegative_numeric_spend")
    frame_checks: list[pa.Check] = []
    if kind == "media":
        columns = {
            "date": date,
            "market": _market_column(cfg),
            "channel": pa.Column(
                None,
                checks=_label_checks(
                    cfg.channel_names, cfg.validation.allow_unknown_channels, "known_channels"
                ),
            ),
            "spend": pa.Column(None, checks=_landing_number_checks(cfg, spend_sign)),
            "impressions": pa.Column(
                object,
                checks=_landing_number_checks(cfg, spend_sign),
                required=False,
                nullable=True,
            ),
        }
        unique = ["date", "market", "channel"]
    elif kind == "kpi":
        sign = (
            None
            if cfg.validation.allow_negative_kpi
            else pa.Check(lambda s: ~(_number(s) < 0) | _non_finite(s), name="nonnegative_kpi")
        )
        columns = {
            "date": date,
            "market": _market_column(cfg),
            cfg.kpi.name: pa.Column(
                None,
                checks=[pa.Check(_numeric, name="numeric_values"), *_landing_number_checks(cfg, sign)],
            ),
        }
        unique = ["date", "market"]
    elif kind == "controls":
        columns = {
            "date": date,
            "market": _market_column(cfg),
            "control": pa.Column(
                None,
                checks=_label_checks(
                    cfg.control_names, cfg.validation.allow_unknown_controls, "known_controls"
                ),
            ),
            # Numbers are checked like spend; labels of categorical controls pass (the row check below).
            "value": pa.Column(None, checks=_landing_number_checks(cfg, None)),
        }
        unique = ["date", "market", "control"]
        categorical = set(cfg.categorical_controls)
        # A row check (a value is a number unless its control is categorical: then it is a label); an
        # empty value is missing_values' to report.
        frame_checks = [
            pa.Check(
                lambda f: _numeric(f["value"]) | f["value"].isna() | f["control"].isin(categorical),
                name="numeric_control_values",
            )
        ]
    else:
        raise ValueError(f"unknown landing kind {kind!r}")
    return pa.DataFrameSchema(
        columns, checks=frame_checks, unique=unique, strict=False, name=f"landing_{kind}"
    )


def lift_test_schema(cfg: InputContract) -> pa.DataFrameSchema:
    """The rules of a lift-test file: the ones :class:`~mmm_pipeline.model.calibration.LiftTests`
    enforces, plus configured channels and markets, so a delivered test can always enter a fit.

    A test is keyed by its week of ``end_date`` (fits use the tests that ended by their last week), so
    that date must lie in the calendar like any landing date; ``start_date`` only has to parse (checked
    when the dates are read) and not come after it.
    """
    finite = [pa.Check(_finite, name="finite_numbers"), _plausible(cfg)]
    columns = {
        "market": _market_column(cfg),
        "channel": pa.Column(None, checks=[_member_of(cfg.channel_names, "known_channels")]),
        "start_date": pa.Column(None, nullable=True),
        "end_date": pa.Column(None, checks=_date_checks(cfg), nullable=True),
        "spend": pa.Column(
            None, checks=[*finite, pa.Check(lambda s: ~(_number(s) < 0), name="nonnegative_numeric_spend")]
        ),
        "delta_spend": pa.Column(
            None, checks=[*finite, pa.Check(lambda s: ~(_number(s) == 0), name="nonzero_delta_spend")]
        ),
        "lift": pa.Column(None, checks=finite),
        "lift_se": pa.Column(
            None, checks=[*finite, pa.Check(lambda s: ~(_number(s) <= 0), name="positive_lift_se")]
        ),
    }
    return pa.DataFrameSchema(
        columns,
        checks=[
            pa.Check(_end_not_before_start, name="end_not_before_start"),
            pa.Check(_nonnegative_tested_spend, name="nonnegative_tested_spend"),
        ],
        unique=["market", "channel", "start_date", "end_date", "spend", "delta_spend"],
        strict=False,
        name="landing_lift_tests",
    )


#: Rules on the modeling table (one row per market and week), shown as asset checks on it.
MODELING_RULES: dict[str, str] = {
    "unique_market_week": "one row per (market, week)",
    "kpi_every_week": "the KPI is present for every modeled week",
    "no_gaps": "weeks are consecutive inside each market's model window",
    "no_future_weeks": "no week starts after the as-of date",
    "nonnegative_spend": "spend per channel is a number >= 0 (after the media gap-fill policy)",
    "controls_present": "every control has a value (after its fill policy)",
}


def _present(rule: str) -> pa.Check:
    """Fails on missing values (pandera skips nulls in checks unless told not to)."""
    return pa.Check(lambda s: s.notna(), name=rule, ignore_na=False)


def _no_gaps(frame: pd.DataFrame) -> pd.Series:
    """True for rows whose week follows the previous week of the same market by exactly 7 days."""
    weeks = pd.to_datetime(frame["week"])
    step = weeks.groupby(frame["market"]).diff()
    return step.isna() | (step == pd.Timedelta(days=7))


def modeling_schema(cfg: InputContract) -> pa.DataFrameSchema:
    """Schema of ``fct_modeling_weekly``: columns follow the configured channels and controls."""
    today = pd.Timestamp(cfg.today())
    columns: dict[str, pa.Column] = {
        "market": pa.Column(str),
        "week": pa.Column("datetime64[ns]", checks=pa.Check(lambda s: s <= today, name="no_future_weeks")),
        "kpi": pa.Column(float, nullable=True, checks=_present("kpi_every_week")),
    }
    for channel in cfg.channel_names:
        columns[f"spend_{channel}"] = pa.Column(
            float, nullable=True, checks=pa.Check(_nonnegative, name="nonnegative_spend", ignore_na=False)
        )
        columns[f"impressions_{channel}"] = pa.Column(float, nullable=True)
    for control in cfg.controls:
        if control.kind == "categorical":
            # The week's label. With fill 'zero' a week without one is the no-label group, a value of
            # its own; with 'ffill' or 'error' it is missing.
            checks = [] if control.fill == "zero" else [_present("controls_present")]
            columns[f"control_{control.name}"] = pa.Column(None, nullable=True, checks=checks)
        else:
            columns[f"control_{control.name}"] = pa.Column(
                float, nullable=True, checks=_present("controls_present")
            )
    return pa.DataFrameSchema(
        columns,
        checks=[pa.Check(_no_gaps, name="no_gaps")],
        unique=["market", "week"],
        strict=False,
        name="fct_modeling_weekly",
    )


def modeling_rule_of(check_name: str) -> str:
    return "unique_market_week" if "uniqueness" in check_name else check_name
