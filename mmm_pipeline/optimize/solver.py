"""Maximizing a plan's objective under its linear rules: SLSQP with analytic gradients, multi-start, and
branch-and-bound over channels that are either off or above a minimum.

* Continuous part: SciPy's SLSQP on the free variables (fixed and switched-off ones are eliminated),
  linear constraints passed with their constant Jacobians, the objective's exact gradient from
  :mod:`mmm_pipeline.optimize.response` (one vector-Jacobian product per evaluation). Variables are in
  units of ``budget / n_variables`` and the objective is divided by its size at the first start, so
  SLSQP's tolerances are relative. Starts: the current allocation, an even split and ``n_starts - 2``
  random splits, each projected onto the feasible set (an L1 projection LP), so every start is feasible.
  The best feasible result wins; a result SLSQP left a hair outside the rules is projected back and
  re-checked (:func:`mmm_pipeline.optimize.constraints.violations`).
* Many channels (a geo budget's market x channel cells, ``search="faces"``): the corners would be two
  large SLSQP runs per cell, so the search climbs from the current allocation only, in legs rescaled
  where each stopped, then moves channels to better faces of their curves at the rules' prices
  (:func:`_improve_faces`) and climbs again.
* Semi-continuous channels (``min_on``): best-first branch-and-bound. A node fixes some of them off
  (spend 0) or on (at least ``min_on``) and relaxes the rest to ``[0, upper]``; the relaxation's optimum
  bounds every completion, so nodes that cannot beat the incumbent are pruned, and a relaxed optimum where
  every free channel is at 0 or above its minimum is a valid allocation. The branch channel is the one
  furthest inside ``(0, min_on)``. Nodes are checked for feasibility (MILP) before they are solved. With
  a concave objective (logistic saturation, mean / CVaR) the relaxations are solved to their global
  optimum and the search is exact, equivalent to enumerating every on/off set; with S-shaped saturation
  it is a heuristic whose answer is always checked against every rule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import linprog, minimize

from mmm_pipeline.optimize.constraints import (
    LinearSystem,
    Problem,
    _split,
    is_feasible,
    linear_system,
    violations,
)
from mmm_pipeline.optimize.objective import ObjectiveFunction
from mmm_pipeline.optimize.response import ResponseModel

#: How :func:`solve` searches: every channel's corners (one market) or faces at the rules' prices (many).
Search = Literal["corners", "faces"]
#: Posterior draws on which every start climbs first (:func:`_multistart`).
SCREEN_DRAWS = 100
#: Best distinct screened ends that climb again on every draw.
POLISH = 2


@dataclass
class Evaluator:
    """Objective value and gradient of an allocation ``(H, C)`` in currency."""

    problem: Problem
    response: ResponseModel
    objective: ObjectiveFunction
    n_evals: int = 0

    def contributions(self, plan: np.ndarray) -> np.ndarray:
        """Per-draw, per-channel contribution ``(S, C)`` (steady state: weekly; plan: window total)."""
        plan = np.asarray(plan, dtype=float).reshape(self.problem.weeks, -1)
        if self.problem.steady_state:
            return self.response.steady_state(plan[0])
        return self.response.plan_contribution(plan, self.problem.carry_in, self.problem.after)

    def thinned(self, max_draws: int) -> Evaluator:
        """The same objective on at most ``max_draws`` evenly spaced posterior draws (itself if it has no
        more): a cheap stand-in to tell local optima apart."""
        n = self.response.n_draws
        if n <= max_draws:
            return self
        idx = np.round(np.linspace(0, n - 1, max_draws)).astype(int)
        return Evaluator(self.problem, self.response.subset(idx), self.objective.subset(idx))

    def value(self, plan: np.ndarray) -> float:
        plan = np.asarray(plan, dtype=float).reshape(self.problem.weeks, -1)
        value, _, _ = self.objective(self.contributions(plan).sum(axis=1), float(plan.sum()))
        return value

    def value_and_grad(self, plan: np.ndarray) -> tuple[float, np.ndarray]:
        self.n_evals += 1
        plan = np.asarray(plan, dtype=float).reshape(self.problem.weeks, -1)
        spend = float(plan.sum())
        if self.problem.steady_state:
            contribution, slope = self.response.steady_state_grad(plan[0])
            value, d_g, d_spend = self.objective(contribution.sum(axis=1), spend)
            grad = (d_g @ slope)[None, :]
        else:
            contribution, state = self.response.plan_forward(
                plan, self.problem.carry_in, self.problem.after, slope=True
            )
            value, d_g, d_spend = self.objective(contribution.sum(axis=1), spend)
            grad = self.response.plan_vjp(state, d_g)
        return value, grad + d_spend


@dataclass
class SolveInfo:
    """What the search did: nodes of the on/off search, SLSQP runs, objective evaluations (on every draw,
    and on the thinned posterior that screens the starts), seconds."""

    nodes: int = 0
    nlp_solves: int = 0
    evaluations: int = 0
    screen_evaluations: int = 0
    seconds: float = 0.0
    semicontinuous: list[str] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


@dataclass
class _Reduced:
    """The system on reduced variables ``y`` with ``z = base + m @ y``.

    :meth:`of` substitutes fixed variables (fixed channels, switched-off channels); :meth:`flat` also
    ties each channel's weeks to one total spread by a fixed weekly pattern (a warm start for plans).
    """

    system: LinearSystem
    m: np.ndarray  # (n, k)
    base: np.ndarray  # (n,)
    a: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray

    @classmethod
    def of(cls, system: LinearSystem) -> _Reduced:
        fixed = np.isfinite(system.ub) & (system.ub - system.lb <= 1e-12 * np.maximum(1.0, np.abs(system.ub)))
        base = np.where(fixed, system.lb, 0.0)
        m = np.eye(system.lb.size)[:, ~fixed]
        return cls._make(system, m, base, system.lb[~fixed], system.ub[~fixed])

    @classmethod
    def flat(cls, system: LinearSystem, weeks: int, pattern: np.ndarray) -> _Reduced | None:
        """Each channel's weekly spend = its total x ``pattern`` (weekly shares summing to 1)."""
        full = cls.of(system)
        n = system.lb.size
        n_ch = n // weeks
        free = full.m.any(axis=1).reshape(weeks, n_ch)
        channels = [c for c in range(n_ch) if free[:, c].all()]
        if any(free[:, c].any() and not free[:, c].all() for c in range(n_ch)) or not channels:
            return None
        m = np.zeros((n, len(channels)))
        lb, ub = np.zeros(len(channels)), np.full(len(channels), np.inf)
        for j, c in enumerate(channels):
            idx = np.arange(c, n, n_ch)
            m[idx, j] = pattern
            positive = pattern > 0
            lb[j] = np.max(system.lb[idx][positive] / pattern[positive])
            ub[j] = np.min(system.ub[idx][positive] / pattern[positive])
        return cls._make(system, m, full.base, lb, ub)

    @classmethod
    def _make(
        cls, system: LinearSystem, m: np.ndarray, base: np.ndarray, lb: np.ndarray, ub: np.ndarray
    ) -> _Reduced:
        shift = system.a @ base
        return cls(system, m, base, system.a @ m, system.lo - shift, system.hi - shift, lb, ub)

    @property
    def size(self) -> int:
        return self.m.shape[1]

    def full(self, y: np.ndarray) -> np.ndarray:
        return self.base + self.m @ y

    def to_reduced(self, z: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(self.m, z - self.base, rcond=None)[0]

    def project(self, target: np.ndarray) -> np.ndarray | None:
        """The feasible ``y`` nearest ``target`` (a full ``z``) in L1 distance."""
        n = self.size
        if n == 0:
            return np.zeros(0) if self.meets(np.zeros(0), 1e-9) else None
        p = self.to_reduced(target)
        sub = LinearSystem(self.a, self.lo, self.hi, self.lb, self.ub, 1.0, [])
        a_ub, b_ub, a_eq, b_eq = _split(sub)
        eye = np.eye(n)
        # variables [y, d]: d >= y - p, d >= p - y
        rows = [np.hstack([eye, -eye]), np.hstack([-eye, -eye])]
        rhs = [p, -p]
        if a_ub is not None:
            rows.insert(0, np.hstack([a_ub, np.zeros_like(a_ub)]))
            rhs.insert(0, b_ub)
        a_eq2 = None if a_eq is None else np.hstack([a_eq, np.zeros_like(a_eq)])
        bounds = [*zip(self.lb, self.ub, strict=True), *[(0, None)] * n]
        result = linprog(
            np.concatenate([np.zeros(n), np.ones(n)]), A_ub=np.vstack(rows), b_ub=np.concatenate(rhs),
            A_eq=a_eq2, b_eq=b_eq, bounds=bounds, method="highs",
        )  # fmt: skip
        return None if result.status != 0 else result.x[:n]

    def meets(self, y: np.ndarray, tol: float = 1e-10) -> bool:
        v = self.a @ y
        rows = np.all(v >= self.lo - tol * np.maximum(1, np.abs(self.lo))) and np.all(
            v <= self.hi + tol * np.maximum(1, np.abs(self.hi))
        )
        return bool(rows and np.all(y >= self.lb - tol) and np.all(y <= self.ub + tol))


def _slsqp(
    evaluator: Evaluator, reduced: _Reduced, start: np.ndarray, fscale: float, maxiter: int, ftol: float
) -> tuple[np.ndarray, str, int]:
    """SLSQP from ``start`` (reduced ``y``): the end point ``y``, SLSQP's message, its iterations."""
    scale = reduced.system.scale
    weeks = evaluator.problem.weeks

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        z = reduced.full(y)
        value, grad = evaluator.value_and_grad((z * scale).reshape(weeks, -1))
        return -value / fscale, -(reduced.m.T @ grad.reshape(-1)) * scale / fscale

    a, lo, hi = reduced.a, reduced.lo, reduced.hi
    eq = np.isfinite(lo) & np.isfinite(hi) & (np.abs(hi - lo) <= 1e-12)
    up = np.isfinite(hi) & ~eq
    low = np.isfinite(lo) & ~eq
    constraints = []
    if eq.any():
        constraints.append({"type": "eq", "fun": lambda y: a[eq] @ y - hi[eq], "jac": lambda y: a[eq]})
    if up.any() or low.any():
        g = np.vstack([-a[up], a[low]])
        h = np.concatenate([hi[up], -lo[low]])
        constraints.append({"type": "ineq", "fun": lambda y: h + g @ y, "jac": lambda y: g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = minimize(
            fun, start, jac=True, method="SLSQP", bounds=list(zip(reduced.lb, reduced.ub, strict=True)),
            constraints=constraints, options={"maxiter": maxiter, "ftol": ftol},
        )  # fmt: skip
    return np.clip(result.x, reduced.lb, reduced.ub), str(result.message), int(result.nit)


def _starts(
    problem: Problem,
    reduced: _Reduced,
    n_spread: int,
    rng: np.random.Generator,
    current_only: bool = False,
) -> list[np.ndarray]:
    """Feasible starts (full ``z``), each projected onto the rules (L1): the current allocation, an even
    split, the corners and ``n_spread`` random splits (or the current allocation only).

    With S-shaped (Hill) curves the objective has a local optimum on most faces where some channels are
    off, and SLSQP stays on the face it starts near: a channel at 0 has no marginal return there. So the
    corners matter: each channel at its lowest total the rules allow (off where it can be, so every
    on/off channel off) and at its highest, the rest of the budget split evenly over the other channels.
    The extremes are read off the channel's own bounds (the projection settles the other rules: no LP per
    channel). The random splits are seeded: the search is deterministic.
    """
    n, n_ch, weeks = problem.n_vars, len(problem.channels), problem.weeks
    pattern = _week_pattern(problem)
    scale = reduced.system.scale
    if current_only:
        return _distinct(reduced, [problem.current.reshape(-1) / scale])

    def spread(totals: np.ndarray) -> np.ndarray:
        return np.outer(pattern, totals).reshape(-1)

    targets = [problem.current.reshape(-1) / scale, spread(np.full(n_ch, float(weeks)))]
    system = reduced.system
    for c in range(n_ch if n_ch > 1 else 0):
        ends = float(system.lb[c::n_ch].sum()), float(system.ub[c::n_ch].sum())
        if ends[1] - ends[0] <= 1e-12 * n:  # fixed or switched off
            continue
        for total in ends:
            total = min(max(total, 0.0), float(n))
            totals = np.full(n_ch, (n - total) / (n_ch - 1))
            totals[c] = total
            targets.append(spread(totals))
    targets += [spread(rng.dirichlet(np.ones(n_ch)) * n) for _ in range(max(n_spread, 0))]
    return _distinct(reduced, targets)


def _distinct(reduced: _Reduced, targets: list[np.ndarray]) -> list[np.ndarray]:
    """The distinct feasible projections (full ``z``) of ``targets``."""
    out: list[np.ndarray] = []
    for t in targets:
        y = reduced.project(t)
        if y is not None:
            z = reduced.full(y)
            if not any(np.allclose(z, o, atol=1e-9) for o in out):
                out.append(z)
    return out


def _week_pattern(problem: Problem) -> np.ndarray:
    shares = problem.plan.horizon.week_shares
    return np.full(problem.weeks, 1.0 / problem.weeks) if shares is None else np.asarray(shares, dtype=float)


def _preconditioned(
    evaluator: Evaluator, reduced: _Reduced, z: np.ndarray, together: bool = False
) -> _Reduced:
    """``reduced`` with each channel's variables rescaled by ``1 / sqrt(curvature)`` at ``z``.

    SLSQP's quasi-Newton model starts from the identity; channels whose spend differs by orders of
    magnitude make that a poor guess and cost many iterations (97 instead of 30 on the 13-week case-study
    plan). The curvature of the objective along each channel's variables is measured with one extra
    gradient per channel (a difference of analytic gradients), or, ``together``, with one extra gradient
    for all channels at once: a channel's contribution depends on its own spend only, so a step along
    every channel at once reads each channel's curvature (exactly for the mean; the risk measures'
    weighting of the draws couples channels a little), which is what hundreds of channels (a geo
    budget's cells) need.
    """
    if reduced.size == 0:
        return reduced
    problem, scale = evaluator.problem, reduced.system.scale
    n_ch = len(problem.channels)
    owner = np.argmax(reduced.m != 0, axis=0) % n_ch  # channel of each reduced variable

    def grad(z_: np.ndarray) -> np.ndarray:
        return evaluator.value_and_grad((z_ * scale).reshape(problem.weeks, -1))[1].reshape(-1) * scale

    g0 = grad(z)
    curvature = np.ones(reduced.size)
    measured = {}
    steps = {}
    for c in np.unique(owner):
        direction = reduced.m[:, owner == c].sum(axis=1)
        level = np.abs(z[direction != 0]).mean()
        steps[c] = (direction, 1e-4 * max(level, 1e-3))
    if together:
        moved = grad(z + sum(h * direction for direction, h in steps.values())) - g0
    for c, (direction, h) in steps.items():
        difference = moved if together else grad(z + h * direction) - g0
        measured[c] = abs(difference @ direction) / (h * (direction @ direction))
    positive = [v for v in measured.values() if v > 0]
    if not positive:
        return reduced
    floor = 1e-8 * max(positive)
    for c, v in measured.items():
        curvature[owner == c] = max(v, floor)
    d = 1.0 / np.sqrt(curvature)
    d = np.clip(d / np.exp(np.log(d).mean()), 1e-3, 1e3)
    return _Reduced._make(reduced.system, reduced.m * d, reduced.base, reduced.lb / d, reduced.ub / d)


def _climb(
    evaluator: Evaluator,
    reduced: _Reduced,
    z: np.ndarray,
    fscale: float,
    maxiter: int,
    ftol: float,
    info: SolveInfo,
    rescale: bool = False,
) -> np.ndarray | None:
    """SLSQP from the full ``z``: the feasible end point (full ``z``, projected back onto the rules if SLSQP
    left it a hair outside), or ``None`` if it cannot be.

    ``rescale``: SLSQP in legs of :data:`RESTART` iterations, each on the variables preconditioned afresh
    where the last one stopped (``reduced`` is then the plain system). With hundreds of variables SLSQP's
    quasi-Newton model learns the curvature one direction per iteration: 400 iterations to converge on
    100 cells from a scaling measured once at the start, since S-shaped curves change curvature on the
    way. A fresh diagonal scaling per leg is close to a Newton step for these separable objectives.
    """
    if not reduced.size:
        return z
    if rescale:
        return _climb_rescaled(evaluator, reduced, z, fscale, maxiter, ftol, info)
    y, message, nit = _slsqp(evaluator, reduced, reduced.to_reduced(z), fscale, maxiter, ftol)
    info.nlp_solves += 1
    info.iterations.append(nit)
    if not reduced.meets(y):
        projected = reduced.project(reduced.full(y))
        if projected is None:
            info.messages.append(f"SLSQP ended outside the rules and could not be projected: {message}")
            return None
        y = projected
    return reduced.full(y)


#: SLSQP iterations per leg of a rescaled climb (:func:`_climb`).
RESTART = 40


def _climb_rescaled(
    evaluator: Evaluator,
    reduced: _Reduced,
    z: np.ndarray,
    fscale: float,
    maxiter: int,
    ftol: float,
    info: SolveInfo,
) -> np.ndarray | None:
    scale, weeks = reduced.system.scale, evaluator.problem.weeks
    best, best_value, spent = None, -np.inf, 0
    while spent < maxiter:
        leg = _preconditioned(evaluator, reduced, z, together=True)
        end = _climb(evaluator, leg, z, fscale, RESTART, ftol, info)
        if end is None:
            break
        nit = info.iterations[-1]
        spent += max(nit, 1)
        value = evaluator.value((end * scale).reshape(weeks, -1))
        improved = value > best_value + ftol * fscale
        if value > best_value:
            best, best_value = end, value
        if nit < RESTART or not improved:
            break
        z = end
    return best


def _multistart(
    evaluator: Evaluator,
    screen: Evaluator,
    reduced: _Reduced,
    starts: list[np.ndarray],
    fscale: float,
    maxiter: int,
    ftol: float,
    info: SolveInfo,
    rescale: bool = False,
) -> list[tuple[np.ndarray, float]]:
    """Feasible SLSQP ends over ``starts`` (full ``z``) as ``(z, value)``, best first (at most
    :data:`POLISH` distinct ones when the starts were screened; empty if none is feasible).

    With many draws each start first climbs on ``screen`` (the posterior thinned to
    :data:`SCREEN_DRAWS`: the same curves, the cost of an evaluation divided accordingly); the
    :data:`POLISH` best distinct ends then climb again on every draw, from where they stopped (a few
    iterations). Which local optimum is best is a coarse question the thinned posterior answers; the
    exact optimum within it is settled on all draws.
    """
    scale, weeks = reduced.system.scale, evaluator.problem.weeks

    def value_of(ev: Evaluator, z: np.ndarray) -> float:
        return ev.value((z * scale).reshape(weeks, -1))

    if screen is not evaluator and len(starts) > POLISH:
        ends = [_climb(screen, reduced, z, fscale, maxiter, ftol, info, rescale) for z in starts]
        ranked = sorted(((value_of(screen, z), i) for i, z in enumerate(ends) if z is not None), reverse=True)
        chosen: list[np.ndarray] = []
        for _, i in ranked:
            if not any(np.allclose(ends[i], c, rtol=0, atol=1e-3) for c in chosen):
                chosen.append(ends[i])
            if len(chosen) == POLISH:
                break
        starts = chosen
    ends = [_climb(evaluator, reduced, start, fscale, maxiter, ftol, info, rescale) for start in starts]
    return sorted(((z, value_of(evaluator, z)) for z in ends if z is not None), key=lambda e: -e[1])


def _solve_relaxation(
    evaluator: Evaluator,
    system: LinearSystem,
    n_starts: int,
    rng: np.random.Generator,
    info: SolveInfo,
    fscale: list[float],
    maxiter: int,
    ftol: float,
    search: Search = "corners",
) -> tuple[np.ndarray, float] | None:
    """Best feasible SLSQP result over the starts (:func:`_starts`, :func:`_multistart`), as
    ``(plan (H, C), value)``; ``None`` if infeasible. ``search``: see :func:`solve`.

    Multi-week plans run the starts on the flat version (each channel's total spread evenly, or by
    ``week_shares``: one variable per channel, cheap) and refine the :data:`POLISH` best distinct flat
    plans week by week (the week-by-week problem is large and its optimum near a flat one, but not always
    the best flat one: with S-shaped curves, concentrating a channel's spend in some weeks can lift it
    past its threshold, so a channel the best flat plan switches off may win once its weeks are free).
    Variables are preconditioned per channel (:func:`_preconditioned`).
    """
    problem = evaluator.problem
    weeks = problem.weeks
    reduced = _Reduced.of(system)
    rescale = search == "faces"  # many channels: climbs rescaled as they go (see _climb)
    starts = _starts(problem, reduced, n_starts, rng, current_only=rescale)
    if not starts:
        return None
    if not fscale:
        # a gain objective is about 0 at the current allocation: scale by the current value's size then
        first = evaluator.value((starts[0] * system.scale).reshape(weeks, -1))
        fscale.append(max(abs(first), evaluator.objective.value_scale, 1e-12))
    screen = evaluator.thinned(SCREEN_DRAWS)
    if weeks > 1 and reduced.size:
        flat = _Reduced.flat(system, weeks, _week_pattern(problem))
        flat_starts = (
            [] if flat is None else [flat.full(y) for z in starts if (y := flat.project(z)) is not None]
        )
        if flat_starts:
            if not rescale:
                flat = _preconditioned(evaluator, flat, flat_starts[0])
            flat_ends = _multistart(
                evaluator, screen, flat, flat_starts, fscale[0], maxiter, ftol, info, rescale
            )
            if flat_ends and rescale:
                flat_ends = _improve_faces(evaluator, flat, flat_ends, fscale[0], maxiter, ftol, info)
            if flat_ends:
                # faces: the face moves already chose among the flat ends; one week-by-week climb
                starts = [z for z, _ in flat_ends[: 1 if rescale else POLISH]]
    if reduced.size and not rescale:
        reduced = _preconditioned(evaluator, reduced, starts[0])
    ends = _multistart(evaluator, screen, reduced, starts, fscale[0], maxiter, ftol, info, rescale)
    if ends and rescale:
        ends = _improve_faces(evaluator, reduced, ends, fscale[0], maxiter, ftol, info)
    if screen is not evaluator:
        info.screen_evaluations += screen.n_evals
    return ((ends[0][0] * system.scale).reshape(weeks, -1), ends[0][1]) if ends else None


#: Spend levels per channel at which :func:`_improve_faces` reads each channel's curve.
FACE_GRID = 32
#: Rounds of :func:`_improve_faces` at most (one accepted move each), and moves tried per round.
FACE_ROUNDS = 8
FACE_TRIES = 3


def _improve_faces(
    evaluator: Evaluator,
    reduced: _Reduced,
    ends: list[tuple[np.ndarray, float]],
    fscale: float,
    maxiter: int,
    ftol: float,
    info: SolveInfo,
) -> list[tuple[np.ndarray, float]]:
    """Move channels to a better face of their curves, at the prices of the rules, and climb again.

    With S-shaped curves a local optimum can leave a channel on the wrong face: on at a level where its
    average return is below what the budget earns elsewhere (it should be off), or low where spending
    more would climb past its threshold (it should be high). SLSQP cannot see either: it only follows
    marginal returns. The prices tell: at the optimum ``z``, the gradient of the objective in each
    variable is, where the variable is between its bounds, the price the active rules put on it
    (``A' lambda``, least squares over those variables). A channel's own term ``f_j(t) - price_j t``
    (``f_j``: its contribution along its variable, weighted per draw as the risk measure weights them at
    ``z``) is then read on a grid of :data:`FACE_GRID` levels between its bounds; where some level beats
    the current one by more than ``1e-6`` of the objective, the channel is a candidate. The
    :data:`FACE_TRIES` largest gains are tried one at a time (the channel moved there, the start projected
    onto the rules, then climbed); the highest end, if above the current one, is kept and the prices read
    again there; at most :data:`FACE_ROUNDS` rounds. Moving all candidates at once fails: national
    rules (a channel's national band) then push their spend back somewhere arbitrary. This is the
    Lagrangian optimality test of a separable problem, used as a heuristic (the answer is always the
    climbed, checked allocation).

    Needs one variable per channel (steady state, or a multi-week plan's flat version); otherwise
    ``ends`` come back unchanged.
    """
    problem, scale, weeks = evaluator.problem, reduced.system.scale, evaluator.problem.weeks
    n_ch = len(problem.channels)
    if not reduced.size:
        return ends
    nonzero = reduced.m != 0
    owners = [np.unique(np.flatnonzero(nonzero[:, k]) % n_ch) for k in range(reduced.size)]
    if any(o.size != 1 for o in owners):
        return ends
    owner = np.array([o[0] for o in owners])
    if np.unique(owner).size != owner.size:
        return ends
    best_z, best_value = ends[0]
    for _ in range(FACE_ROUNDS):
        moves = _face_moves(evaluator, reduced, best_z, best_value, owner)
        round_best = None
        for k, level in moves[:FACE_TRIES]:
            target = reduced.to_reduced(best_z)
            target[k] = level
            # the moved channel stays where it was put: the projection settles the rules with the others
            lb, ub = reduced.lb.copy(), reduced.ub.copy()
            lb[k] = ub[k] = level
            y = dataclasses.replace(reduced, lb=lb, ub=ub).project(reduced.full(target))
            if y is None:
                continue
            z = _climb(evaluator, reduced, reduced.full(y), fscale, maxiter, ftol, info, rescale=True)
            if z is None:
                continue
            value = evaluator.value((z * scale).reshape(weeks, -1))
            if value > best_value + 1e-9 * abs(best_value) and (round_best is None or value > round_best[1]):
                round_best = (z, value)
        if round_best is None:
            break
        best_z, best_value = round_best
    if best_z is ends[0][0]:
        return ends
    return [(best_z, best_value), *ends]


def _face_moves(
    evaluator: Evaluator, reduced: _Reduced, z: np.ndarray, value: float, owner: np.ndarray
) -> list[tuple[int, float]]:
    """Reduced variables of ``z`` that are on a worse face than another level at the rules' prices (see
    :func:`_improve_faces`), as ``(variable, better level)``, largest gain first."""
    scale, weeks = reduced.system.scale, evaluator.problem.weeks
    y = reduced.to_reduced(z)
    plan = (z * scale).reshape(weeks, -1)
    contribution = evaluator.contributions(plan)
    _, d_g, d_spend = evaluator.objective(contribution.sum(axis=1), float(plan.sum()))
    _, grad = evaluator.value_and_grad(plan)
    g = reduced.m.T @ grad.reshape(-1) * scale  # objective per unit of each reduced variable
    # prices of the active rows, fitted on the variables strictly between their bounds
    tol = 1e-7
    v = reduced.a @ y
    active = (
        np.isfinite(reduced.lo) & (np.abs(v - reduced.lo) <= tol * np.maximum(1, np.abs(reduced.lo)))
    ) | (np.isfinite(reduced.hi) & (np.abs(v - reduced.hi) <= tol * np.maximum(1, np.abs(reduced.hi))))
    with np.errstate(invalid="ignore"):  # inf bounds: never reached
        inside = (y > reduced.lb + tol * np.maximum(1, np.abs(reduced.lb))) & (
            ~np.isfinite(reduced.ub) | (y < reduced.ub - tol * np.maximum(1, np.abs(reduced.ub)))
        )
    a = reduced.a[active]
    if a.shape[0] and inside.any():
        lam = np.linalg.lstsq(a[:, inside].T, g[inside], rcond=None)[0]
        price = a.T @ lam
    else:
        price = np.zeros(reduced.size)
    top = np.where(np.isfinite(reduced.ub), reduced.ub, 3.0 * np.maximum(y, y.mean()))
    levels = reduced.lb[:, None] + (top - reduced.lb)[:, None] * np.linspace(0.0, 1.0, FACE_GRID)[None, :]
    levels = np.concatenate([y[:, None], levels], axis=1)  # column 0: where it is
    terms = np.empty_like(levels)
    for i in range(levels.shape[1]):
        zi = reduced.full(levels[:, i])
        plan_i = (zi * scale).reshape(weeks, -1)
        c = evaluator.contributions(plan_i)[:, owner]  # (S, k): each channel moves along its own variable
        spend = plan_i.sum(axis=0)[owner]
        terms[:, i] = d_g @ c + d_spend * spend - price * levels[:, i]
    gain = terms.max(axis=1) - terms[:, 0]
    move = np.flatnonzero(gain > 1e-6 * max(abs(value), evaluator.objective.value_scale, 1e-12))
    best = levels[move, np.argmax(terms[move], axis=1)]
    return [(int(k), float(level)) for _, k, level in sorted(zip(-gain[move], move, best, strict=True))]


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One BLAS thread while solving: the matrices are small, and a multi-threaded OpenBLAS spinning on a
    shared machine made each SLSQP step 40x slower in our measurements. ``threadpoolctl`` comes with
    scikit-learn; without it this does nothing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def solve(
    problem: Problem,
    evaluator: Evaluator,
    *,
    n_starts: int = 3,
    seed: int = 0,
    max_nodes: int = 512,
    maxiter: int = 500,
    ftol: float = 1e-10,
    search: Search = "corners",
) -> tuple[np.ndarray, float, SolveInfo]:
    """The best allocation ``(H, C)`` found, its objective value and what the search did.

    ``search``: ``corners`` (one market's channels): SLSQP from the current allocation, an even split,
    every channel's corners and ``n_starts - 2`` random splits (:func:`_starts`). ``faces`` (many
    channels: a geo budget's market x channel cells): from the current allocation only, climbed in
    rescaled legs (:func:`_climb`), then channels moved to better faces of their curves at the rules'
    prices (:func:`_improve_faces`). With 200 cells the corners are 400 SLSQP runs of 200 variables, each
    needing hundreds of iterations (40 markets x 5 channels did not finish in 15 minutes); the face moves
    do their job, on/off and low/high, one channel at a time where the prices say it pays.

    The caller has checked feasibility (:func:`mmm_pipeline.optimize.constraints.require_feasible`).
    """
    with single_threaded_blas():
        return _solve(
            problem, evaluator, n_starts=n_starts, seed=seed, max_nodes=max_nodes, maxiter=maxiter, ftol=ftol,
            search=search,
        )  # fmt: skip


def _solve(
    problem: Problem,
    evaluator: Evaluator,
    *,
    n_starts: int,
    seed: int,
    max_nodes: int,
    maxiter: int,
    ftol: float,
    search: Search = "corners",
) -> tuple[np.ndarray, float, SolveInfo]:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    info = SolveInfo()
    n_ch = len(problem.channels)
    fixed_channels = {int(c) for r in problem.rules if r.var_lb for c in {i % n_ch for i in r.var_lb}}
    sc = {r.min_on[0]: r.min_on[1] for r in problem.semicontinuous if r.min_on[0] not in fixed_channels}
    info.semicontinuous = [problem.channels[c] for c in sc]
    fscale: list[float] = []
    counter = itertools.count()
    heap: list[tuple[float, int, tuple[int, ...], tuple[int, ...]]] = [(-np.inf, next(counter), (), ())]
    best: tuple[np.ndarray, float] | None = None
    while heap and info.nodes < max_nodes:
        bound, _, off, on = heapq.heappop(heap)
        if best is not None and -bound <= best[1] + 1e-9 * abs(best[1]):
            continue
        info.nodes += 1
        system = linear_system(problem, off=off, on=on)
        if not is_feasible(system, n_ch):
            continue
        relaxed = linear_system(problem, off=off, on=on)
        relaxed.semicontinuous = []
        found = _solve_relaxation(evaluator, relaxed, n_starts, rng, info, fscale, maxiter, ftol, search)
        if found is None:
            continue
        plan, value = found
        if best is not None and value <= best[1] + 1e-9 * abs(best[1]):
            continue
        totals = plan.sum(axis=0)
        open_sc = [c for c in sc if c not in off and c not in on]
        inside = [c for c in open_sc if 0 < totals[c] < sc[c] * (1 - 1e-9)]
        if not inside:
            best = (plan, value)
            continue
        c = max(inside, key=lambda c: min(totals[c], sc[c] - totals[c]) / sc[c])
        heapq.heappush(heap, (-value, next(counter), (*off, c), on))
        heapq.heappush(heap, (-value, next(counter), off, (*on, c)))
    if heap and info.nodes >= max_nodes:
        info.messages.append(f"on/off search stopped at {max_nodes} nodes; the answer may not be the best")
    info.evaluations = evaluator.n_evals
    info.seconds = time.perf_counter() - t0
    if best is None:
        raise RuntimeError(
            f"{problem.plan.source}: no allocation found although the rules are feasible: {info.messages}"
        )
    plan = np.where(np.abs(best[0]) < 1e-12 * problem.budget, 0.0, best[0])
    broken = violations(problem, plan)
    if broken:
        raise RuntimeError(f"{problem.plan.source}: the optimizer's allocation breaks {broken}")
    return plan, evaluator.value(plan), info
