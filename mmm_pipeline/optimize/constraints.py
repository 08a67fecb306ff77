"""A plan's rules as linear constraints on the weekly spend, feasibility checks and conflict search.

The decision variable is the spend plan ``x`` ``(H, C)`` flattened row-major (week by week). Every rule
of a plan becomes a :class:`Rule` named by its key path in the plan file: rows ``lo <= a @ x <= hi``,
bounds on single variables, or a semi-continuous "off or at least ``min_on``" condition on a channel's
total. Before any optimization, :func:`check_feasible` asks an LP (``scipy.optimize.linprog``) or, with
semi-continuous rules, a MILP (``scipy.optimize.milp``, one binary per such channel) whether all rules can
hold at once; if not, :func:`conflicting_rules` runs a deletion filter over the rules to find an
irreducible infeasible subset (IIS): rules that cannot hold together, though any proper subset can.
:class:`InfeasiblePlanError` names them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from mmm_pipeline.optimize.plan import ChannelRule, Plan, PlanError

_EPS = 1e-9


class InfeasiblePlanError(ValueError):
    """No allocation satisfies every rule. ``conflicts``: ``(rule name, description)`` of an IIS."""

    def __init__(self, plan: Plan, conflicts: list[tuple[str, str]]) -> None:
        self.plan, self.conflicts = plan, conflicts
        listed = "; ".join(f"{name} ({text})" for name, text in conflicts)
        super().__init__(
            f"{plan.source}: plan {plan.name!r} is infeasible; these rules conflict: {listed}. "
            "Each is needed for the conflict: relaxing any one of them can make the plan feasible."
        )


@dataclass
class Rule:
    """One named rule: linear rows ``lo <= a @ x <= hi``, variable bounds, or a semi-continuous channel."""

    name: str
    description: str
    a: np.ndarray | None = None  # (k, n)
    lo: np.ndarray | None = None  # (k,)
    hi: np.ndarray | None = None  # (k,)
    var_lb: dict[int, float] = field(default_factory=dict)
    var_ub: dict[int, float] = field(default_factory=dict)
    min_on: tuple[int, float] | None = None  # (channel index, minimum total when on)


@dataclass
class Problem:
    """A plan resolved against a model's channels, the current allocation and the spend history.

    ``current`` ``(H, C)`` is the current allocation over the horizon (the reference for ``change_pct``,
    ``fixed`` and the uplift); ``carry_in`` the raw spend of the weeks before the plan (recent history);
    ``after`` ``(C,)`` the weekly spend assumed after the plan (``plan`` mode); ``hist_min``/``hist_max``
    ``(C,)`` the smallest non-zero and the largest weekly spend in the history, ``hist_always_on`` whether
    the channel spent in every week of it.
    """

    plan: Plan
    channels: tuple[str, ...]
    weeks: int
    steady_state: bool
    current: np.ndarray
    carry_in: np.ndarray | None
    after: np.ndarray | None
    budget: float
    rules: list[Rule]
    groups: dict[str, list[str]]
    channel_group: dict[str, str]
    hist_min: np.ndarray | None
    hist_max: np.ndarray | None
    hist_always_on: np.ndarray | None = None

    @property
    def n_vars(self) -> int:
        return self.weeks * len(self.channels)

    def var(self, week: int, channel: int) -> int:
        return week * len(self.channels) + channel

    @property
    def semicontinuous(self) -> list[Rule]:
        return [r for r in self.rules if r.min_on is not None]


def _as_history(history: pd.DataFrame | np.ndarray | None, channels: Sequence[str]) -> np.ndarray | None:
    if history is None:
        return None
    if isinstance(history, pd.DataFrame):
        # a column per channel, or the modeling table's spend_<channel> columns
        columns = list(channels)
        if any(c not in history.columns for c in columns):
            columns = [f"spend_{c}" for c in channels]
        missing = [c for c in channels if c not in history.columns and f"spend_{c}" not in history.columns]
        if missing or any(c not in history.columns for c in columns):
            raise ValueError(f"history lacks spend columns for channels {missing or list(channels)}")
        if "week" in history.columns:
            history = history.sort_values("week")
        values = history[columns].to_numpy(dtype=float)
    else:
        values = np.asarray(history, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(channels):
        raise ValueError(f"history must be (weeks, {len(channels)}) spend, channels in model order")
    if (values < 0).any() or not np.isfinite(values).all():
        raise ValueError("history spend must be finite and non-negative")
    return values


def _as_current(
    current: Mapping[str, float] | pd.Series | np.ndarray | None,
    history: np.ndarray | None,
    channels: Sequence[str],
    weeks: int,
    recent: int,
) -> np.ndarray:
    """The current allocation ``(H, C)``: a weekly ``(C,)`` spend repeated, an ``(H, C)`` plan, or the
    average of the last ``recent`` history weeks."""
    if current is None:
        if history is None or history.shape[0] == 0:
            raise ValueError("give the current spend or the spend history")
        weekly = history[-recent:].mean(axis=0)
    elif isinstance(current, Mapping | pd.Series):
        missing = [c for c in channels if c not in current]
        if missing:
            raise ValueError(f"current spend lacks channels {missing}")
        weekly = np.array([float(current[c]) for c in channels])
    else:
        arr = np.asarray(current, dtype=float)
        if arr.shape == (weeks, len(channels)):
            weekly = None
            plan = arr
        elif arr.shape == (len(channels),):
            weekly = arr
        else:
            raise ValueError(
                f"current must be ({len(channels)},) weekly spend or a ({weeks}, {len(channels)}) plan"
            )
    plan = np.tile(weekly, (weeks, 1)) if weekly is not None else plan
    if (plan < 0).any() or not np.isfinite(plan).all():
        raise ValueError("current spend must be finite and non-negative")
    return plan


def _resolve_groups(
    plan: Plan, channels: Sequence[str], groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """Groups from the passed mapping (channel -> group, or group -> channels), overridden by the plan's."""
    out: dict[str, list[str]] = {}
    for key, value in (groups or {}).items():
        if isinstance(value, str):  # channel -> group (the project config's form)
            if key in channels:
                out.setdefault(value, []).append(key)
        else:
            out[key] = [c for c in value if c in channels]
    for name, members in plan.groups.items():
        for i, c in enumerate(members):
            if c not in channels:
                raise PlanError(
                    plan.source, f"groups.{name}.{i}", f"unknown channel {c!r}; known: {list(channels)}"
                )
        out[name] = list(members)
    return out


def amount_rules(
    key: str,
    suffix: str,
    name: str,
    row: np.ndarray,
    current_amount: float,
    minimum: float | None = None,
    maximum: float | None = None,
    min_change_pct: float | None = None,
    max_change_pct: float | None = None,
) -> list[Rule]:
    """Bounds on one sum of spend (``row @ x``: a channel's total, a market's, a channel's over markets):
    absolute ``min``/``max`` and changes in % of ``current_amount``, named ``<key>.<rule><suffix>``."""
    row = np.asarray(row, dtype=float)[None]
    rules = []
    if minimum is not None:
        rules.append(
            Rule(
                f"{key}.min{suffix}",
                f"{name} >= {minimum:,.0f}",
                row,
                np.array([minimum]),
                np.array([np.inf]),
            )
        )
    if maximum is not None:
        rules.append(
            Rule(
                f"{key}.max{suffix}",
                f"{name} <= {maximum:,.0f}",
                row,
                np.array([-np.inf]),
                np.array([maximum]),
            )
        )
    for side, pct in (("min", min_change_pct), ("max", max_change_pct)):
        if pct is None:
            continue
        amount = current_amount * (1 + pct / 100)
        lo, hi = (amount, np.inf) if side == "min" else (-np.inf, amount)
        op = ">=" if side == "min" else "<="
        rules.append(
            Rule(
                f"{key}.{side}_change_pct{suffix}",
                f"{name} {op} {amount:,.0f} ({pct:+g}% of current {current_amount:,.0f})",
                row,
                np.array([lo]),
                np.array([hi]),
            )  # fmt: skip
        )
    return rules


def channel_rules(
    rule: ChannelRule, key: str, suffix: str, name: str, c: int, current_plan: np.ndarray
) -> list[Rule]:
    """One channel's rules (column ``c`` of an ``(H, C)`` allocation whose current one is
    ``current_plan``), named ``<key>.<rule><suffix>`` as in the plan file."""
    weeks, n_ch = current_plan.shape
    current_total = float(current_plan[:, c].sum())
    if rule.fixed is not None and rule.fixed is not False:
        amount = current_total if rule.fixed is True else float(rule.fixed)
        pattern = current_plan[:, c] if current_total > 0 else np.full(weeks, 1.0 / weeks)
        pattern = pattern / pattern.sum() * amount
        fixed = {t * n_ch + c: float(pattern[t]) for t in range(weeks)}
        return [
            Rule(f"{key}.fixed{suffix}", f"{name} fixed at {amount:,.0f}", var_lb=fixed, var_ub=dict(fixed))
        ]
    row = np.zeros(weeks * n_ch)
    row[c::n_ch] = 1.0
    rules = amount_rules(
        key, suffix, name, row, current_total, rule.min, rule.max, rule.min_change_pct, rule.max_change_pct
    )
    if rule.min_on is not None:
        rules.append(
            Rule(f"{key}.min_on{suffix}", f"{name} is 0 or >= {rule.min_on:,.0f}", min_on=(c, rule.min_on))
        )
    return rules


def history_rules(
    plan: Plan, hist: np.ndarray | None, channels: Sequence[str], weeks: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, list[Rule]]:
    """Each channel's historical weekly range (smallest non-zero and largest week, whether it spent in
    every week) over the plan's ``history.weeks`` of ``hist`` ``(W, C)``, and the ``history.cap_multiple``
    rules it sets."""
    src, n_ch = plan.source, len(channels)
    rules: list[Rule] = []
    hist_min = hist_max = always_on = None
    if hist is not None and hist.shape[0]:
        window = hist if plan.history.weeks is None else hist[-plan.history.weeks :]
        hist_max = window.max(axis=0)
        positive = np.where(window > 0, window, np.inf).min(axis=0)
        hist_min = np.where(np.isfinite(positive), positive, 0.0)
        always_on = (window > 0).all(axis=0)
    if plan.history.cap_multiple is not None:
        if hist_max is None:
            raise PlanError(src, "history.cap_multiple", "needs the spend history")
        for c, name in enumerate(channels):
            cap = plan.history.cap_multiple * float(hist_max[c])
            ub = {t * n_ch + c: cap for t in range(weeks)}
            rules.append(
                Rule(
                    f"history.cap_multiple[{name}]",
                    f"{name} weekly spend <= {plan.history.cap_multiple:g} x historical max "
                    f"{hist_max[c]:,.0f}",
                    var_ub=ub,
                )
            )

    return hist_min, hist_max, always_on, rules


def build_problem(
    plan: Plan,
    channels: Sequence[str],
    *,
    current: Mapping[str, float] | pd.Series | np.ndarray | None = None,
    history: pd.DataFrame | np.ndarray | None = None,
    groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None = None,
) -> Problem:
    """Resolve ``plan`` against the model's ``channels``: amounts, percentages, groups, history range.

    ``current``: the current weekly spend per channel (mapping or ``(C,)``) or an ``(H, C)`` plan; default
    the average of the last ``plan.current_weeks`` weeks of ``history``. ``history``: recent weekly spend,
    oldest first, ``(W, C)`` in channel order or a DataFrame with one column per channel, named by the
    channel or ``spend_<channel>`` as in the modeling table (sorted by a ``week`` column if present); it
    gives the carry-in of a multi-week plan and the historical range.
    ``groups``: channel -> group (the project config's ``group``) or group -> channels; the plan's own
    ``groups`` take precedence.
    """
    if plan.scope == "geo":
        raise PlanError(
            plan.source, "scope", "a geo plan budgets across markets: optimize it with optimize_geo_budget"
        )
    channels = tuple(channels)
    n_ch, weeks = len(channels), plan.horizon.weeks
    steady = plan.horizon.resolved_mode == "steady_state"
    hist = _as_history(history, channels)
    current_plan = _as_current(current, hist, channels, weeks, plan.current_weeks)
    current_total = current_plan.sum(axis=0)
    group_map = _resolve_groups(plan, channels, groups)
    channel_group = {c: g for g, members in group_map.items() for c in members}
    n = weeks * n_ch
    src = plan.source

    def total_row(idx: Sequence[int]) -> np.ndarray:
        row = np.zeros(n)
        for c in idx:
            row[c::n_ch] = 1.0
        return row

    def names_to_idx(names: str | Sequence[str], key: str, allow_groups: bool) -> list[int]:
        out: list[int] = []
        for i, name in enumerate([names] if isinstance(names, str) else names):
            if name in channels:
                out.append(channels.index(name))
            elif allow_groups and name in group_map:
                out.extend(channels.index(c) for c in group_map[name])
            else:
                where = key if isinstance(names, str) else f"{key}.{i}"
                known = f"channels {list(channels)}" + (
                    f" or groups {sorted(group_map)}" if allow_groups else ""
                )
                raise PlanError(src, where, f"unknown name {name!r}; expected one of {known}")
        return sorted(set(out))

    rules: list[Rule] = []
    all_row = total_row(range(n_ch))
    b = plan.budget
    budget = b.total if b.total is not None else float(current_total.sum()) * (1 + b.change_pct / 100)
    if budget <= 0:
        raise PlanError(src, "budget.change_pct", "the current spend is zero: give budget.total instead")
    budget_key = "budget.total" if b.total is not None else "budget.change_pct"
    exact = b.mode == "exact"
    rules.append(
        Rule(
            budget_key,
            f"total spend {'=' if exact else '<='} {budget:,.0f}",
            all_row[None],
            np.array([budget if exact else -np.inf]),
            np.array([budget]),
        )  # fmt: skip
    )
    if b.min is not None:
        rules.append(
            Rule(
                "budget.min",
                f"total spend >= {b.min:,.0f}",
                all_row[None],
                np.array([b.min]),
                np.array([np.inf]),
            )
        )
    if plan.horizon.week_shares is not None:
        a = np.zeros((weeks, n))
        for t in range(weeks):
            a[t, t * n_ch : (t + 1) * n_ch] = 1.0
        target = np.array(plan.horizon.week_shares) * budget
        lo = target if exact else np.full(weeks, -np.inf)
        rules.append(
            Rule("horizon.week_shares", "each week's spend = its share of the budget", a, lo, target)
        )

    # ``channels.*`` applies to every channel without its own entry; its rules are named per channel.
    entries = []
    for name, rule in plan.channels.items():
        if name == "*":
            continue
        if name not in channels:
            raise PlanError(src, f"channels.{name}", f"unknown channel; known: {list(channels)}")
        entries.append((name, rule, f"channels.{name}", ""))
    if "*" in plan.channels:
        entries += [
            (c, plan.channels["*"], "channels.*", f"[{c}]") for c in channels if c not in plan.channels
        ]
    for name, rule, key, suffix in entries:
        rules += channel_rules(rule, key, suffix, name, channels.index(name), current_plan)

    for name, rule in plan.shares.items():
        key = f"shares.{name}"
        if rule.group is not None:
            if rule.group not in group_map:
                raise PlanError(
                    src, f"{key}.group", f"unknown group {rule.group!r}; known: {sorted(group_map)}"
                )
            idx = [channels.index(c) for c in group_map[rule.group]]
            label = rule.group
        elif rule.channels is not None:
            idx = names_to_idx(rule.channels, f"{key}.channels", allow_groups=False)
            label = "+".join(channels[i] for i in idx)
        else:
            idx, label = list(range(n_ch)), "all channels"
        sets = [([i], f"[{channels[i]}]", channels[i]) for i in idx] if rule.each else [(idx, "", label)]
        for members, suffix, text in sets:
            for side, share in (("min", rule.min), ("max", rule.max)):
                if share is None:
                    continue
                a = (total_row(members) - share * all_row)[None]
                lo, hi = (0.0, np.inf) if side == "min" else (-np.inf, 0.0)
                op = ">=" if side == "min" else "<="
                rules.append(
                    Rule(
                        f"{key}.{side}{suffix}",
                        f"{text} {op} {share:.0%} of total spend",
                        a,
                        np.array([lo]),
                        np.array([hi]),
                    )
                )

    for name, rule in plan.ratios.items():
        key = f"ratios.{name}"
        lhs = names_to_idx(rule.lhs, f"{key}.lhs", allow_groups=True)
        rhs = names_to_idx(rule.rhs, f"{key}.rhs", allow_groups=True)
        lname = rule.lhs if isinstance(rule.lhs, str) else "+".join(rule.lhs)
        rname = rule.rhs if isinstance(rule.rhs, str) else "+".join(rule.rhs)
        for side, ratio in (("min", rule.min), ("max", rule.max)):
            if ratio is None:
                continue
            a = (total_row(lhs) - ratio * total_row(rhs))[None]
            lo, hi = (0.0, np.inf) if side == "min" else (-np.inf, 0.0)
            op = ">=" if side == "min" else "<="
            rules.append(
                Rule(f"{key}.{side}", f"{lname} {op} {ratio:g} x {rname}", a, np.array([lo]), np.array([hi]))
            )

    hist_min, hist_max, always_on, cap_rules = history_rules(plan, hist, channels, weeks)
    rules += cap_rules

    carry_in = None if hist is None else hist
    after = current_plan[-1] if plan.horizon.after == "current" else None
    return Problem(
        plan, channels, weeks, steady, current_plan, carry_in, after, float(budget), rules, group_map,
        channel_group, hist_min, hist_max, always_on,
    )  # fmt: skip


# --- linear algebra of a rule set ------------------------------------------------------------------------


@dataclass
class LinearSystem:
    """Rules in solver form on scaled variables ``z = x / scale``: rows ``lo <= A z <= hi``, bounds."""

    a: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    scale: float
    semicontinuous: list[tuple[int, float]]  # (channel, min_on in scaled units)


def linear_system(
    problem: Problem,
    rules: Sequence[Rule] | None = None,
    off: Sequence[int] = (),
    on: Sequence[int] = (),
) -> LinearSystem:
    """Stack ``rules`` (default all) for the solvers; channels in ``off`` spend nothing, those in ``on``
    spend at least their ``min_on``. Rows are normalised to a largest coefficient of 1."""
    rules = problem.rules if rules is None else rules
    n, n_ch = problem.n_vars, len(problem.channels)
    scale = problem.budget / n
    rows, los, his = [], [], []
    lb, ub = np.zeros(n), np.full(n, np.inf)
    sc: list[tuple[int, float]] = []
    min_on = {r.min_on[0]: r.min_on[1] for r in rules if r.min_on is not None}
    for r in rules:
        if r.a is not None:
            rows.append(r.a * scale)
            los.append(r.lo)
            his.append(r.hi)
        for i, v in r.var_lb.items():
            lb[i] = max(lb[i], v / scale)
        for i, v in r.var_ub.items():
            ub[i] = min(ub[i], v / scale)
        if r.min_on is not None and r.min_on[0] not in on and r.min_on[0] not in off:
            sc.append((r.min_on[0], r.min_on[1] / scale))
    for c in off:
        ub[c::n_ch] = 0.0
    for c in on:
        row = np.zeros(n)
        row[c::n_ch] = scale
        rows.append(row[None])
        los.append(np.array([min_on[c]]))
        his.append(np.array([np.inf]))
    if rows:
        a, lo, hi = np.concatenate(rows), np.concatenate(los), np.concatenate(his)
        norm = np.abs(a).max(axis=1)
        norm[norm == 0] = 1.0
        a, lo, hi = a / norm[:, None], lo / norm, hi / norm
    else:
        a, lo, hi = np.zeros((0, n)), np.zeros(0), np.zeros(0)
    return LinearSystem(a, lo, hi, lb, ub, scale, sc)


def _linprog(system: LinearSystem, cost: np.ndarray) -> np.ndarray | None:
    """Minimize ``cost @ z`` over the system without semi-continuity; ``None`` if infeasible."""
    a_ub, b_ub, a_eq, b_eq = _split(system)
    result = linprog(
        cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
        bounds=np.column_stack([system.lb, system.ub]), method="highs",
    )  # fmt: skip
    return result.x if result.status == 0 else None


def _split(system: LinearSystem) -> tuple:
    eq = np.isfinite(system.lo) & np.isfinite(system.hi) & (np.abs(system.hi - system.lo) <= _EPS)
    up = np.isfinite(system.hi) & ~eq
    low = np.isfinite(system.lo) & ~eq
    a_ub = np.concatenate([system.a[up], -system.a[low]])
    b_ub = np.concatenate([system.hi[up], -system.lo[low]])
    if not a_ub.size:
        a_ub = b_ub = None
    a_eq, b_eq = (system.a[eq], system.hi[eq]) if eq.any() else (None, None)
    return a_ub, b_ub, a_eq, b_eq


def is_feasible(system: LinearSystem, n_channels: int) -> bool:
    """Whether the rules can all hold; semi-continuous channels via a MILP with one binary each."""
    n = system.a.shape[1]
    if (system.lb > system.ub + _EPS).any():
        return False
    if not system.semicontinuous:
        return _linprog(system, np.zeros(n)) is not None
    k = len(system.semicontinuous)
    # Big-M: a variable's own bound, else 10x the budget (scaled variables sum to n at the budget).
    big = np.where(np.isfinite(system.ub), system.ub, 10.0 * n)
    rows, lo, hi = [np.column_stack([system.a, np.zeros((system.a.shape[0], k))])], [system.lo], [system.hi]
    for j, (c, m) in enumerate(system.semicontinuous):
        idx = np.arange(c, n, n_channels)
        on_row = np.zeros(n + k)
        on_row[idx] = 1.0
        on_row[n + j] = -m  # total >= m * on
        rows.append(on_row[None])
        lo.append(np.array([0.0]))
        hi.append(np.array([np.inf]))
        for i in idx:  # z_i <= big_i * on
            row = np.zeros(n + k)
            row[i], row[n + j] = 1.0, -big[i]
            rows.append(row[None])
            lo.append(np.array([-np.inf]))
            hi.append(np.array([0.0]))
    result = milp(
        np.zeros(n + k),
        constraints=LinearConstraint(np.concatenate(rows), np.concatenate(lo), np.concatenate(hi)),
        integrality=np.concatenate([np.zeros(n), np.ones(k)]),
        bounds=Bounds(np.concatenate([system.lb, np.zeros(k)]), np.concatenate([system.ub, np.ones(k)])),
    )
    return result.status == 0


def check_feasible(problem: Problem, rules: Sequence[Rule] | None = None) -> bool:
    return is_feasible(linear_system(problem, rules), len(problem.channels))


def conflicting_rules(problem: Problem) -> list[Rule]:
    """An irreducible infeasible subset of the rules (deletion filter), or ``[]`` if all can hold.

    Each rule in turn is dropped for good if the others stay infeasible without it; what remains is
    infeasible, and dropping any single remaining rule makes it feasible. When several such subsets
    exist, the order of trial decides which one is reported (see below).
    """
    if check_feasible(problem):
        return []
    kept = list(problem.rules)
    # Rules tried first are the likeliest to be dropped when several conflicts exist: try per-channel
    # details first, so the budget and the share rules, the usual culprits, are kept and reported.
    # In a geo plan the per-market rules (``markets.``) are the details, the national ones the culprits.
    order = ("history.", "markets.", "channels.", "ratios.", "shares.", "horizon.", "budget.")
    trial_order = sorted(
        kept, key=lambda r: next((i for i, p in enumerate(order) if r.name.startswith(p)), len(order))
    )
    for rule in trial_order:
        trial = [r for r in kept if r is not rule]
        if not check_feasible(problem, trial):
            kept = trial
    return kept


def require_feasible(problem: Problem) -> None:
    """Raise :class:`InfeasiblePlanError` naming conflicting rules if the plan cannot be met."""
    conflicts = conflicting_rules(problem)
    if conflicts:
        raise InfeasiblePlanError(problem.plan, [(r.name, r.description) for r in conflicts])


def violations(problem: Problem, plan: np.ndarray, rtol: float = 1e-6) -> list[tuple[str, float]]:
    """Rules an allocation ``(H, C)`` breaks, with the relative violation; ``[]`` if it meets them all.

    A row counts as met when ``lo - a@x`` and ``a@x - hi`` are at most ``rtol`` times the size of its
    terms (``sum |a_i x_i|``, the bound, at least ``1e-9`` of the budget); a semi-continuous channel when
    its total is exactly 0 or at least ``min_on (1 - rtol)``.
    """
    x = np.asarray(plan, dtype=float).reshape(-1)
    floor = 1e-9 * problem.budget
    out: list[tuple[str, float]] = []
    if (x < 0).any():
        out.append(("non-negative spend", float(-x.min() / max(problem.budget, 1.0))))
    for r in problem.rules:
        worst = 0.0
        if r.a is not None:
            value = r.a @ x
            size = np.maximum.reduce(
                [
                    np.abs(r.a * x).sum(axis=1),
                    np.where(np.isfinite(r.lo), np.abs(r.lo), 0.0),
                    np.where(np.isfinite(r.hi), np.abs(r.hi), 0.0),
                    np.full(len(value), floor),
                ]
            )
            excess = np.maximum(
                np.where(np.isfinite(r.lo), r.lo - value, 0), np.where(np.isfinite(r.hi), value - r.hi, 0)
            )
            worst = max(worst, float((excess / size).max()))
        for i, v in r.var_lb.items():
            worst = max(worst, (v - x[i]) / max(abs(v), abs(x[i]), floor))
        for i, v in r.var_ub.items():
            worst = max(worst, (x[i] - v) / max(abs(v), abs(x[i]), floor))
        if r.min_on is not None:
            c, m = r.min_on
            total = x[c :: len(problem.channels)].sum()
            if total != 0 and total < m * (1 - rtol):
                worst = max(worst, min(total, m - total) / m)
        if worst > rtol:
            out.append((r.name, worst))
    return out
