"""Why each channel's recommendation stops where it does: its binding rule and that rule's shadow price.

A reader who sees a channel at +100% although its next unit still returns a lot asks what holds it
there. At the optimum the objective's gradient is a combination of the normals of the rules that hold
with equality (the Karush-Kuhn-Tucker conditions): ``grad f = sum_i lambda_i n_i`` with ``lambda_i >= 0``
for inequalities. Each multiplier ``lambda_i`` is the rule's shadow price: how much the objective would
gain per unit the rule is loosened (one more unit of the channel's cap, of the share's or ratio's slack,
of the budget). The multipliers are recovered from the solution itself (bounded least squares on the
active rules' normals and the exact gradient), so no re-solve is needed and the figure is the model's
own marginal trade-off, not a guess.

Per channel the binding rule is the channel's own active rule (bound, share, ratio, history cap) with a
positive multiplier; a channel held by none of them stops where its marginal return equals the budget's
(the ``total`` rule, its shadow price the budget's), or at zero spend (``off``), or where more spend adds
nothing (``none``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from mmm_pipeline.optimize.constraints import Problem, Rule

#: Rule name prefixes and the kind of rule a reader knows them as.
KINDS = (
    ("budget.", "total"),
    ("horizon.", "total"),
    ("channels.", "bound"),
    ("shares.", "share"),
    ("ratios.", "ratio"),
    ("history.", "history cap"),
)
#: A rule counts as holding with equality within this share of its size (as :func:`violations` measures).
ACTIVE_RTOL = 1e-5


@dataclass(frozen=True)
class Binding:
    """What holds one channel's recommendation.

    ``rule``: the plan file's key(s) of the binding rule(s), ``" + "``-joined when several hold together;
    ``kind``: ``bound``, ``share``, ``ratio``, ``history cap``, ``total`` (the budget), ``off`` (zero spend)
    or ``none``; ``description``: the rule in words; ``shadow_price``: objective gained per unit the rule
    is loosened (KPI per unit of budget for a KPI objective; NaN for ``off`` and ``none``).
    """

    rule: str
    kind: str
    description: str
    shadow_price: float


def rule_kind(name: str) -> str:
    """The kind of rule a plan-file key names; a geo plan's market rules (``markets.``) are bounds on the
    market's total or channels, or shares of the national total (``min_share``/``max_share``)."""
    if name.startswith("markets.") and ".channels." not in name and "_share" in name:
        return "share"
    return next((kind for prefix, kind in KINDS if name.startswith(prefix)), "bound")


def _channels_of(rule: Rule, n_ch: int) -> set[int]:
    """Channels a rule is about: those whose spend it singles out.

    Rows are per-variable coefficients; a channel's coefficient is that of its first week. A rule on
    every channel alike (the budget) is about none; a share rule (``members - s x all``) is about its
    members (the larger coefficient); a bound or a ratio about the channels it names (non-zero)."""
    out: set[int] = {i % n_ch for i in (*rule.var_lb, *rule.var_ub)}
    if rule.min_on is not None:
        out.add(rule.min_on[0])
    if rule.a is not None:
        for row in rule.a:
            coef = row[:n_ch]
            if np.allclose(coef, coef[0]):
                continue
            if (coef == 0).any():
                out |= set(np.flatnonzero(coef != 0).tolist())
            else:
                out |= set(np.flatnonzero(coef > coef.min() + 1e-12).tolist())
    return out


def _active(problem: Problem, x: np.ndarray) -> tuple[list[int], list[np.ndarray], list[bool]]:
    """Rules holding with equality at ``x`` (flat): rule index (-1: spend >= 0), outward normal (the
    direction the rule forbids), and whether it is an equality (multiplier of either sign)."""
    n = x.size
    floor = 1e-9 * problem.budget
    owners, normals, equal = [], [], []

    def add(owner: int, normal: np.ndarray, eq: bool) -> None:
        owners.append(owner)
        normals.append(normal)
        equal.append(eq)

    bounded_below: set[int] = set()
    for k, r in enumerate(problem.rules):
        if r.a is not None:
            value = r.a @ x
            size = np.maximum(np.abs(r.a * x).sum(axis=1), floor)
            for row, v, lo, hi, s in zip(r.a, value, r.lo, r.hi, size, strict=True):
                if np.isfinite(lo) and np.isfinite(hi) and abs(hi - lo) <= ACTIVE_RTOL * s:
                    add(k, row, True)
                elif np.isfinite(hi) and hi - v <= ACTIVE_RTOL * s:
                    add(k, row, False)
                elif np.isfinite(lo) and v - lo <= ACTIVE_RTOL * s:
                    add(k, -row, False)
        for i, v in r.var_ub.items():
            if r.var_lb.get(i) == v:
                add(k, np.eye(n)[i], True)
                bounded_below.add(i)
            elif x[i] >= v - ACTIVE_RTOL * max(abs(v), floor):
                add(k, np.eye(n)[i], False)
        for i, v in r.var_lb.items():
            if r.var_ub.get(i) != v and x[i] <= v + ACTIVE_RTOL * max(abs(v), floor):
                add(k, -np.eye(n)[i], False)
                bounded_below.add(i)
        if r.min_on is not None:
            c, m = r.min_on
            total = x[c :: len(problem.channels)].sum()
            if abs(total - m) <= ACTIVE_RTOL * m:
                row = np.zeros(n)
                row[c :: len(problem.channels)] = 1.0
                add(k, -row, False)
    for i in np.flatnonzero(x <= floor):
        if int(i) not in bounded_below:
            add(-1, -np.eye(n)[i], False)
    return owners, normals, equal


def shadow_prices(problem: Problem, gradient: np.ndarray, plan: np.ndarray) -> dict[int, float]:
    """Each active rule's multiplier at ``plan`` ``(H, C)`` given the objective's ``gradient`` ``(H, C)``
    (per unit of currency): rule index -> shadow price (summed over its rows; -1 is ``spend >= 0``)."""
    x = np.asarray(plan, dtype=float).reshape(-1)
    owners, normals, equal = _active(problem, x)
    if not owners:
        return {}
    matrix = np.column_stack(normals)
    lower = np.where(equal, -np.inf, 0.0)
    solution = lsq_linear(matrix, np.asarray(gradient, dtype=float).reshape(-1), bounds=(lower, np.inf))
    prices: dict[int, float] = {}
    for owner, value in zip(owners, solution.x, strict=True):
        prices[owner] = prices.get(owner, 0.0) + float(value)
    return prices


def binding_rules(problem: Problem, gradient: np.ndarray, plan: np.ndarray) -> list[Binding]:
    """Per channel (model order), the rule that holds its recommendation and its shadow price."""
    prices = shadow_prices(problem, gradient, plan)
    n_ch = len(problem.channels)
    scale = max(float(np.abs(gradient).max()), 1e-300)
    significant = {k: v for k, v in prices.items() if abs(v) > 1e-6 * scale}
    totals = [k for k in significant if k >= 0 and not _channels_of(problem.rules[k], n_ch)]
    spend = np.asarray(plan, dtype=float).sum(axis=0)
    out = []
    for c in range(n_ch):
        own = [
            k for k in significant if k >= 0 and c in _channels_of(problem.rules[k], n_ch)
        ]  # fmt: skip
        if own:
            own.sort(key=lambda k: -abs(significant[k]))
            rules = [problem.rules[k] for k in own]
            out.append(
                Binding(
                    " + ".join(r.name for r in rules),
                    rule_kind(rules[0].name),
                    "; ".join(r.description for r in rules),
                    sum(significant[k] for k in own),
                )
            )
        elif spend[c] <= 1e-9 * problem.budget:
            out.append(Binding("spend >= 0", "off", "spend cannot go below 0", float("nan")))
        elif totals:
            rules = [problem.rules[k] for k in totals]
            out.append(
                Binding(
                    " + ".join(r.name for r in rules),
                    "total",
                    "; ".join(r.description for r in rules),
                    sum(significant[k] for k in totals),
                )
            )
        else:
            out.append(Binding("", "none", "more spend adds nothing to the objective", float("nan")))
    return out
