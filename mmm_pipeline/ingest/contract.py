"""The input contract's config sections: markets, KPI, calendar, channels, controls, data validation.

What a landing file may hold and how its rows are read. The ingest stage (landing rules, reading,
registration), the feature SQL and the model's training window take an :class:`InputContract`; the
project config is one (it adds the other stages' sections and the paths), so callers pass it as is.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mmm_pipeline.settings import WEEKDAYS, ConfigError, Identifier, StrictModel, Weekday

#: Columns of a lift-test table (landing file, DuckDB table), in order.
LIFT_TEST_COLUMNS = (
    "market", "channel", "start_date", "end_date", "spend", "delta_spend", "lift", "lift_se",
)  # fmt: skip


class ChannelConfig(StrictModel):
    """A media channel. ``aliases`` are the names platform exports use for it (e.g. 'Facebook Ads')."""

    name: Identifier
    aliases: list[str] = Field(default_factory=list)
    group: str = "other"


class ControlConfig(StrictModel):
    """A control variable (price, macro index, competitor spend, holiday flag...)."""

    name: Identifier
    aliases: list[str] = Field(default_factory=list)
    kind: Literal["numeric", "categorical"] = "numeric"
    """``categorical``: the values are labels (events, promotions, holidays by name). The warehouse and
    BI keep the label; the model gets one 0/1 indicator per label against a baseline label
    (:mod:`mmm_pipeline.ingest.categorical`). A numeric control that receives labels is rejected
    with a message saying how to declare it: a data delivery never changes what kind of variable the
    model has."""
    fill: Literal["zero", "ffill", "error"] = "zero"
    """Weeks without a value: 0, the last known value, or a failed check. Categorical: no label (the
    no-label group), the last label, or a failed check."""
    aggregate: Literal["mean", "sum", "max"] = "mean"
    """How daily values combine into a week (prices: mean; event counts: sum; flags: max). Not for a
    categorical control, which has one label a week (see :mod:`mmm_pipeline.ingest.categorical`)."""
    baseline: str | None = None
    """Categorical only: the label every indicator is measured against. Default: the no-label group
    (weeks without a label or labelled '', 'na', 'none' ...) when the training weeks have one, else the
    most frequent label."""
    max_levels: int = Field(12, ge=2, le=200)
    """Categorical only: the most distinct labels (baseline included) a fit accepts; more is an error
    naming the control and the count, as a column of free text or ids would otherwise become dozens of
    barely identified coefficients."""

    @model_validator(mode="after")
    def _categorical_keys(self) -> ControlConfig:
        if self.kind == "numeric":
            extra = sorted({"baseline", "max_levels"} & self.model_fields_set)
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to a control with kind: categorical")
        elif "aggregate" in self.model_fields_set:
            raise ValueError(
                "a categorical control has one label a week (an event day labels its week), "
                "so 'aggregate' does not apply; remove it"
            )
        return self


class KpiConfig(StrictModel):
    name: str = "sales"
    """The KPI column in KPI landing files."""


class CalendarConfig(StrictModel):
    week_start: Weekday = "monday"
    """Weekday a model week starts on; daily rows aggregate into the week that holds them."""
    start: dt.date
    """First week the pipeline knows about (partitions start here); earlier rows are rejected."""
    holidays_country: str | None = "US"
    """ISO country code for calendar holiday features (python-holidays), or null for none."""

    @property
    def week_start_index(self) -> int:
        """Python weekday number (Monday=0) of the week start."""
        return WEEKDAYS.index(self.week_start)

    @model_validator(mode="after")
    def _start_on_week_start(self) -> CalendarConfig:
        if self.start.weekday() != self.week_start_index:
            raise ValueError(
                f"calendar.start {self.start} is a {WEEKDAYS[self.start.weekday()]}, "
                f"but calendar.week_start is {self.week_start}"
            )
        return self


class ValidationConfig(StrictModel):
    allow_unknown_channels: bool = False
    """If false, a landing file with a channel not in ``channels`` is quarantined."""
    allow_unknown_controls: bool = False
    media_gap_fill: Literal["zero", "error"] = "zero"
    """Weeks inside the model window with no row for a channel: spend 0, or a failed check."""
    as_of: dt.date | None = None
    """'Today' for the no-future-weeks rule; default is the real date. Tests pin it."""
    date_format: str | None = None
    """The one date format of every landing file (strftime codes, e.g. ``'%d/%m/%Y'``). Default: each
    file's format is detected from all of its dates together (ISO, yyyy/mm/dd, dd/mm/yyyy, mm/dd/yyyy,
    dd.mm.yyyy, dd-mm-yyyy, mm-dd-yyyy, yyyymmdd); a file that two formats read differently is rejected."""
    allow_negative_kpi: bool = False
    """A KPI below 0 (e.g. net sales after returns) is rejected unless this is set."""
    max_value: float = Field(1e15, gt=0)
    """No spend, impressions, KPI or control value may exceed this in size (catches 1e300 and the like)."""
    history_ceiling_multiple: float | None = Field(100.0, gt=1)
    """A week's spend (per channel) or KPI above this multiple of its biggest week so far is absurd;
    ``null`` switches the rule off."""
    history_ceiling_action: Literal["reject", "warn"] = "reject"
    """What a week above the history ceiling does: the file is rejected, or accepted with a warning."""
    history_floor_fraction: float | None = Field(0.01, gt=0, lt=1)
    """A week's spend above 0 but below this share of the channel's median spending week is warned
    about (a typo such as a missing thousands digit group); ``null`` switches the warning off."""
    history_min_weeks: int = Field(8, ge=1)
    """The history rules need this many weeks with a value above 0 before they judge a channel."""

    @field_validator("date_format")
    @classmethod
    def _date_format_round_trips(cls, value: str | None) -> str | None:
        if value is None:
            return value
        sample = dt.date(2024, 6, 3)
        try:
            ok = dt.datetime.strptime(sample.strftime(value), value).date() == sample
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{value!r} is not a full date format: use strftime codes such as '%d/%m/%Y'")
        return value


class InputContract(StrictModel):
    """The input contract: which markets, KPI, channels and controls the data hold, and the rules."""

    markets: list[Identifier] | None = None
    """Markets expected in the data; null admits any. Files without a market column are market 'all'."""
    kpi: KpiConfig = KpiConfig()
    calendar: CalendarConfig
    channels: list[ChannelConfig]
    controls: list[ControlConfig] = Field(default_factory=list)
    validation: ValidationConfig = ValidationConfig()

    @field_validator("channels")
    @classmethod
    def _channels_unique(cls, value: list[ChannelConfig]) -> list[ChannelConfig]:
        if not value:
            raise ValueError("at least one channel is required")
        _unique_names([c.name for c in value], "channel")
        return value

    @field_validator("controls")
    @classmethod
    def _controls_unique(cls, value: list[ControlConfig]) -> list[ControlConfig]:
        _unique_names([c.name for c in value], "control")
        for categorical in (c.name for c in value if c.kind == "categorical"):
            for other in value:
                if other.name.startswith(f"{categorical}__"):
                    raise ValueError(
                        f"control {other.name!r} looks like an indicator of categorical control "
                        f"{categorical!r} (named '{categorical}__<label>'); rename it"
                    )
        return value

    @field_validator("markets")
    @classmethod
    def _markets_ok(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            _unique_names(value, "market")
        return value

    # ---- derived -------------------------------------------------------------------------------
    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    @property
    def control_names(self) -> list[str]:
        return [c.name for c in self.controls]

    @property
    def categorical_controls(self) -> dict[str, ControlConfig]:
        """The controls declared ``kind: categorical``, by name."""
        return {c.name: c for c in self.controls if c.kind == "categorical"}

    def channel_aliases(self) -> dict[str, str]:
        """Map every accepted raw channel label (case-insensitive) to its channel name."""
        return _alias_map(self.channels)

    def control_aliases(self) -> dict[str, str]:
        return _alias_map(self.controls)

    def today(self) -> dt.date:
        return self.validation.as_of or dt.date.today()


def _unique_names(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} {n!r} is listed twice")
        seen.add(n)


def _alias_map(items: list[ChannelConfig] | list[ControlConfig]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        for label in [item.name, *item.aliases]:
            key = label.strip().lower()
            if key in out and out[key] != item.name:
                raise ConfigError(f"label {label!r} is an alias of both {out[key]!r} and {item.name!r}")
            out[key] = item.name
    return out
