"""Budget plan files: the business rules of a budget recommendation, validated by pydantic.

A plan file says how much there is to spend, over which horizon, what to maximize, and which rules the
split must respect. Every rule has a stable name, the key path where it sits in the file
(``shares.digital_floor.min``, ``channels.tv.max``...), so that an infeasible plan can name the rules that
conflict in the words of the file. Example (``mmm_pipeline/demo/plans/<example>/`` holds complete ones)::

    name: base
    horizon: {weeks: 1}                 # 1 (steady-state week) or e.g. 13 (a quarter, week by week)
    budget: {change_pct: 0}             # or {total: 250000}; mode: exact (default) | at_most
    objective:
      kind: kpi                         # kpi | roi | profit | blend
      risk: {measure: mean}             # mean | quantile (q) | mean_minus_sd (lam) | cvar (alpha);
                                        # on: value (default) | gain (over the current plan, same draw)
    groups:                             # optional; otherwise the project config's channel groups
      digital: [search, display, social]
    channels:
      tv: {min_change_pct: -50, max_change_pct: 50}
      search: {min: 10000, max: 60000}
      print: {fixed: true}              # keep the current spend (or a number: that amount)
      radio: {min_on: 15000}            # either off or at least 15000
      "*": {min_change_pct: -50, max_change_pct: 50}   # every channel without its own entry
    shares:
      digital_floor: {group: digital, min: 0.40}
      single_channel_cap: {each: true, max: 0.40}
    ratios:
      search_vs_display: {lhs: search, rhs: display, min: 0.5}   # search >= 0.5 x display
    history: {cap_multiple: 1.5}        # no week above 1.5 x the channel's biggest historical week
                                        # (extrapolation: log, the default, reads the response above the
                                        # biggest week conservatively; posterior: as fitted)

Amounts are in the spend currency and refer to the whole horizon (a 13-week plan's ``budget.total`` is
the quarter's budget, ``channels.tv.max`` the quarter's TV spend). Percentages are relative to the
current spend over the same horizon. Shares are of the plan's total spend. Channel bounds apply whether
a channel is on or off, so a channel with ``min_on`` can only be off if its lower bound is 0.

A geo plan (``scope: geo``) splits one total over every market x channel
(:mod:`mmm_pipeline.optimize.geo`): ``budget``, ``channels``, ``shares`` and ``ratios`` are then national
(a channel's spend summed over the markets), and ``markets`` holds per-market rules::

    scope: geo
    budget: {change_pct: 0}             # the national total
    channels: {tv: {max_change_pct: 30}}
    markets:
      north: {fixed: true}              # keep its current allocation, cell by cell
      south: {min_share: 0.2, channels: {radio: {min_on: 5000}}}
      "*": {min_change_pct: -40, max_change_pct: 40}   # every other market's total

A scenario file changes a base plan::

    scenario: recession
    base: base_plan.yaml                # used when no base plan is passed in
    changes:
      budget: {change_pct: -20}
      shares: {traditional_cap: {group: traditional, max: 0.35}}

``changes`` is merged into the base plan key by key (mappings recursively, other values replaced); a
``null`` removes the key, and setting one of ``budget.total`` / ``budget.change_pct`` drops the other.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PathLike = str | os.PathLike[str]


class PlanError(ValueError):
    """A plan or scenario that cannot be used; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Horizon(_Strict):
    """What is being planned.

    ``steady_state`` (one week only): a weekly spend kept up week after week, scored by the weekly
    contribution once adstock has built up (the long-run yield of a weekly run rate; adstock weights are
    normalized, so a constant spend adstocks to itself). ``plan``: ``weeks`` explicit weeks, each
    channel's spend chosen per week, starting after the recent history (its carry-over flows in) and
    scored on the full effect of the plan's spend, carry-over past the last week included.
    """

    weeks: int = Field(1, ge=1, le=104)
    mode: Literal["steady_state", "plan"] | None = None
    """Default: ``steady_state`` for one week, ``plan`` for more."""
    week_shares: list[float] | None = None
    """``plan`` mode: each week's share of the budget (e.g. phased with demand); sums to 1."""
    after: Literal["current", "zero"] = "current"
    """``plan`` mode: the spend assumed in the ``l_max - 1`` weeks after the plan, where its carry-over
    still works: the current weekly allocation (business as usual) or nothing."""

    @model_validator(mode="after")
    def _check(self) -> Horizon:
        if self.resolved_mode == "steady_state" and self.weeks != 1:
            raise ValueError("mode steady_state plans one (repeated) week: weeks must be 1")
        if self.week_shares is not None:
            if self.resolved_mode != "plan":
                raise ValueError("week_shares needs mode 'plan'")
            if len(self.week_shares) != self.weeks:
                raise ValueError(f"week_shares has {len(self.week_shares)} values for {self.weeks} weeks")
            if min(self.week_shares) < 0 or abs(sum(self.week_shares) - 1) > 1e-6:
                raise ValueError("week_shares must be non-negative and sum to 1")
        return self

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("steady_state" if self.weeks == 1 else "plan")


class Budget(_Strict):
    """The total to spend over the horizon: an amount (``total``) or a change of the current total."""

    total: float | None = Field(None, gt=0)
    change_pct: float | None = Field(None, gt=-100)
    mode: Literal["exact", "at_most"] = "exact"
    """``exact``: spend all of it; ``at_most``: spend up to it (ROI or profit may prefer less)."""
    min: float | None = Field(None, ge=0)
    """``at_most`` only: spend at least this much."""

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if (self.total is None) == (self.change_pct is None):
            raise ValueError("give exactly one of 'total' and 'change_pct'")
        if self.min is not None and self.mode != "at_most":
            raise ValueError("'min' only applies with mode at_most")
        return self


class ChannelRule(_Strict):
    """Rules for one channel's spend over the horizon (absolute amounts and/or % of current spend)."""

    min: float | None = Field(None, ge=0)
    max: float | None = Field(None, ge=0)
    min_change_pct: float | None = Field(None, ge=-100)
    max_change_pct: float | None = Field(None, ge=-100)
    fixed: bool | float | None = None
    """``true``: keep the current spend week by week; a number: spend exactly that (current weekly
    pattern, or evenly if there is no current spend)."""
    min_on: float | None = Field(None, gt=0)
    """Semi-continuous: the channel is either off (0) or spends at least this much."""

    @model_validator(mode="after")
    def _check(self) -> ChannelRule:
        if self.fixed is not None and self.fixed is not False:
            others = [
                k for k in ("min", "max", "min_change_pct", "max_change_pct", "min_on") if getattr(self, k)
            ]
            if others:
                raise ValueError(f"a fixed channel takes no other rules (got {others})")
            if not isinstance(self.fixed, bool) and self.fixed < 0:
                raise ValueError("fixed spend must be >= 0")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        lo, hi = self.min_change_pct, self.max_change_pct
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_change_pct {lo} > max_change_pct {hi}")
        return self


class ShareRule(_Strict):
    """Share of the plan's total spend going to a set of channels (``channels`` or ``group``; default all).

    ``each: true`` applies the bounds to every channel of the set on its own ("no single channel > 40%").
    """

    channels: list[str] | None = None
    group: str | None = None
    each: bool = False
    min: float | None = Field(None, ge=0, le=1)
    max: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> ShareRule:
        if self.channels is not None and self.group is not None:
            raise ValueError("give 'channels' or 'group', not both")
        if self.min is None and self.max is None:
            raise ValueError("give 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class RatioRule(_Strict):
    """Spend of ``lhs`` against spend of ``rhs`` (channel or group names): ``lhs >= min x rhs``,
    ``lhs <= max x rhs``."""

    lhs: str | list[str]
    rhs: str | list[str]
    min: float | None = Field(None, ge=0)
    max: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RatioRule:
        if self.min is None and self.max is None:
            raise ValueError("give 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


class Risk(_Strict):
    """How the posterior draws of the objective are summarised.

    ``mean``: risk-neutral. ``quantile``: the ``q`` quantile (Harrell-Davis, smooth in the draws).
    ``mean_minus_sd``: mean - ``lam`` x standard deviation. ``cvar``: mean of the worst ``alpha`` share of
    draws. The risk-aware ones make channels whose effect is uncertain less attractive.

    By default (``on: value``) the risk is that of the plan's whole value, most of which no plan changes
    (the current spend's own effect): it then favours the best-measured channel whatever its return.
    ``on: gain`` measures it on the gain over the current allocation on the same draw, the risk of the
    decision itself; it keeps plans closer to the current one (see benchmarks/README.md, "Decision
    quality", for what each did on synthetic worlds).
    """

    measure: Literal["mean", "quantile", "mean_minus_sd", "cvar"] = "mean"
    on: Literal["value", "gain"] = "value"
    """``value``: the risk of the plan's value per draw; ``gain``: of its gain over the current allocation
    on the same draw (paired), so a channel's uncertainty counts only as far as the plan changes it."""
    q: float = Field(0.1, gt=0, lt=1)
    lam: float = Field(1.0, ge=0)
    alpha: float = Field(0.1, gt=0, le=1)


class Objective(_Strict):
    """What to maximize, per posterior draw, then summarised by ``risk``.

    ``kpi``: the KPI the plan's spend adds (its contribution). ``roi``: contribution / spend.
    ``profit``: contribution x ``margin`` - spend (``margin``: profit per KPI unit). ``blend``: a weighted
    sum of those, each divided by its (risk-summarised) value at the current allocation, so the weights
    are scale-free.
    """

    kind: Literal["kpi", "roi", "profit", "blend"] = "kpi"
    margin: float | None = Field(None, gt=0)
    weights: dict[Literal["kpi", "roi", "profit"], float] | None = None
    risk: Risk = Risk()

    @model_validator(mode="after")
    def _check(self) -> Objective:
        if self.kind == "blend":
            if not self.weights or all(w == 0 for w in self.weights.values()):
                raise ValueError("a blend needs 'weights', e.g. {kpi: 0.5, profit: 0.5}")
            if min(self.weights.values()) < 0:
                raise ValueError("blend weights must be >= 0")
        elif self.weights is not None:
            raise ValueError("'weights' only applies to kind blend")
        needs_margin = self.kind == "profit" or (self.kind == "blend" and (self.weights or {}).get("profit"))
        if needs_margin and self.margin is None:
            raise ValueError("profit needs 'margin' (profit per KPI unit)")
        return self


class HistoryRules(_Strict):
    """The channels' historical weekly spend range: a cap relative to it, when to flag, and how the
    response is read beyond it."""

    cap_multiple: float | None = Field(None, gt=0)
    """No week's spend above ``cap_multiple`` x the channel's biggest historical week."""
    flag_multiple: float = Field(1.25, ge=1)
    """Flag a plan whose adstocked weekly spend (what the saturation curve reads) goes above
    ``flag_multiple`` x the largest adstocked week of the history (or, for a channel that is on, whose
    weekly spend goes below the smallest non-zero historical week / ``flag_multiple``)."""
    weeks: int | None = Field(None, ge=1)
    """Recent weeks of history defining the range; default all given."""
    extrapolation: Literal["log", "posterior"] = "log"
    """How the optimizer reads a channel's response above the largest adstocked weekly spend of the
    history ``M``, per posterior draw (the largest level its curve saw; needs the history). ``log``
    (default): per posterior draw, the lower of the posterior curve and a logarithmic
    continuation from ``M`` (same value and marginal return at ``M``, then a marginal return falling at
    least in inverse proportion to spend), because past ``M`` the curvature is the prior's, not the
    data's. ``posterior``: the fitted curve as it is."""


class MarketRule(_Strict):
    """A geo plan's rules for one market (``markets.<market>``; ``"*"``: every market without its own entry).

    Amounts are the market's total over all its channels and the horizon; ``min_share``/``max_share`` are
    of the national total; ``fixed: true`` keeps the market's current allocation, channel by channel and
    week by week. ``channels`` holds rules for the market's own channels (a :class:`ChannelRule` each,
    ``"*"`` for every channel of the market without its own entry).
    """

    min: float | None = Field(None, ge=0)
    max: float | None = Field(None, ge=0)
    min_change_pct: float | None = Field(None, ge=-100)
    max_change_pct: float | None = Field(None, ge=-100)
    min_share: float | None = Field(None, ge=0, le=1)
    max_share: float | None = Field(None, ge=0, le=1)
    fixed: bool = False
    channels: dict[str, ChannelRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> MarketRule:
        if self.fixed:
            others = [
                k
                for k in (
                    "min",
                    "max",
                    "min_change_pct",
                    "max_change_pct",
                    "min_share",
                    "max_share",
                    "channels",
                )
                if getattr(self, k)
            ]
            if others:
                raise ValueError(f"a fixed market takes no other rules (got {others})")
        for lo, hi in (("min", "max"), ("min_change_pct", "max_change_pct"), ("min_share", "max_share")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} {a} > {hi} {b}")
        return self


class Plan(_Strict):
    """A budget plan (see the module docstring). ``source`` is where it came from, for messages."""

    scope: Literal["market", "geo"] = "market"
    """``market``: one market's channels (``optimize_budget``). ``geo``: one total over every market x
    channel (:func:`mmm_pipeline.optimize.geo.optimize_geo_budget`): ``budget``, ``channels``, ``shares``
    and ``ratios`` are then national (a channel's spend summed over the markets) and ``markets`` holds the
    per-market rules."""
    name: str = "plan"
    description: str = ""
    horizon: Horizon = Horizon()
    budget: Budget
    objective: Objective = Objective()
    current_weeks: int = Field(13, ge=1)
    """The current allocation is the average weekly spend of this many recent weeks (if not passed in)."""
    groups: dict[str, list[str]] = Field(default_factory=dict)
    channels: dict[str, ChannelRule] = Field(default_factory=dict)
    """Rules by channel name; ``"*"`` holds the rules of every channel without its own entry (named
    ``channels.*.<rule>[<channel>]`` in messages)."""
    shares: dict[str, ShareRule] = Field(default_factory=dict)
    ratios: dict[str, RatioRule] = Field(default_factory=dict)
    history: HistoryRules = HistoryRules()
    markets: dict[str, MarketRule] = Field(default_factory=dict)
    """``scope: geo`` only: rules by market name (``"*"``: every market without its own entry)."""
    source: str = Field("<plan>", exclude=True)

    @model_validator(mode="after")
    def _check_scope(self) -> Plan:
        if self.scope != "geo" and self.markets:
            raise ValueError("'markets' rules need 'scope: geo' (one budget across markets)")
        if self.scope == "geo":
            for name, rule in self.channels.items():
                if rule.min_on is not None:
                    raise ValueError(
                        f"channels.{name}.min_on: a national channel total cannot be 'off or at least'; "
                        "give min_on per market (markets.<market>.channels)"
                    )
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PlanError(str(path), "", f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise PlanError(str(path), "", f"not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PlanError(str(path), "", "the top level must be a mapping of keys")
    return raw


def _validate(raw: Mapping[str, Any], source: str) -> Plan:
    try:
        return Plan.model_validate({**raw, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise PlanError(source, key or "<top level>", f"{err['msg']}{more}") from None


def plan_from_dict(raw: Mapping[str, Any], source: str = "<plan>") -> Plan:
    """Validate a plan given as a mapping (e.g. built in code); errors name ``source`` and the key."""
    return _validate(raw, source)


def load_plan(path: PathLike) -> Plan:
    """Read and validate a plan file; errors (:class:`PlanError`) name the file and the key."""
    path = Path(path)
    return _validate(_read_yaml(path), str(path))


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` merged into ``base``: mappings recursively, other values replaced, ``None`` deletes."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_scenario(base: Plan, changes: Mapping[str, Any], name: str, source: str = "<scenario>") -> Plan:
    """The base plan with a scenario's ``changes`` (see the module docstring), named ``name``."""
    raw = base.model_dump(exclude_none=True)
    budget_change = changes.get("budget")
    if isinstance(budget_change, Mapping):
        # A scenario that states the budget one way replaces the base's other way.
        for a, b in (("total", "change_pct"), ("change_pct", "total")):
            if budget_change.get(a) is not None and b not in budget_change:
                raw.get("budget", {}).pop(b, None)
    merged = merge(raw, changes)
    merged["name"] = name
    return _validate(merged, f"{source} (on base plan {base.source})")


def load_scenario(path: PathLike, base: Plan | None = None) -> Plan:
    """A scenario file applied to ``base``, or, if none is passed, to the plan its ``base`` key names
    (relative to the scenario file)."""
    path = Path(path)
    raw = _read_yaml(path)
    unknown = set(raw) - {"scenario", "description", "base", "changes"}
    if unknown:
        raise PlanError(
            str(path), sorted(unknown)[0], "unknown key; expected scenario, description, base, changes"
        )
    name = raw.get("scenario") or path.stem
    if not isinstance(name, str):
        raise PlanError(str(path), "scenario", "must be a name")
    changes = raw.get("changes") or {}
    if not isinstance(changes, Mapping):
        raise PlanError(str(path), "changes", "must be a mapping of plan keys")
    if base is None:
        if "base" not in raw:
            raise PlanError(str(path), "base", "no base plan: name one here or pass it in")
        if not isinstance(raw["base"], str):
            raise PlanError(str(path), "base", "must be the path of a plan file")
        base_path = (path.parent / raw["base"]).resolve()
        if not base_path.is_file():
            raise PlanError(str(path), "base", f"base plan {base_path} does not exist")
        base = load_plan(base_path)
    changes = dict(changes)
    if raw.get("description"):
        changes.setdefault("description", raw["description"])
    return apply_scenario(base, changes, name, str(path))


def load_scenarios(base: PathLike | Plan, scenarios: list[PathLike]) -> list[Plan]:
    """The base plan followed by each scenario file applied to it (for :func:`compare_scenarios`)."""
    base_plan = base if isinstance(base, Plan) else load_plan(base)
    return [base_plan, *(load_scenario(path, base_plan) for path in scenarios)]
