"""Geo-level budgets: one total split over every market x channel cell, with national and per-market rules.

Each market brings its own :class:`ResponseModel` (its champion's posterior; independent fits today, a
pooled model's per-market responses later). Media effects are additive over channels, so the markets'
responses side by side are one response whose "channels" are the cells ``<market>.<channel>``
(:func:`stack_responses`): the single-market optimizer (:func:`mmm_pipeline.optimize.budget.optimize_problem`:
objectives, risk measures, SLSQP, on/off search, binding rules) then runs on it, with the search made for
many channels (``search="faces"``, :func:`mmm_pipeline.optimize.solver.solve`: no start per cell corner).

Draws: the objective and its risk measure are taken over the posterior draws of the national total, so
draw ``s`` of every market must be one draw of the joint posterior. Markets fitted together (a pooled
model) keep their draw order; independently fitted markets have independent posteriors, so pairing their
draws in any order is a draw of the joint one. Markets with more draws are thinned evenly to the
smallest count.

Rules of a geo plan (``scope: geo``, :class:`mmm_pipeline.optimize.plan.MarketRule`):

* national, in the words of a market plan: ``budget`` (the total over all markets), ``channels`` (a
  channel's spend summed over the markets), ``shares``, ``ratios``, ``horizon.week_shares``. They are
  built by :func:`build_problem` on the national totals and carried to the cells, so they mean exactly
  what they mean for one market;
* per market (``markets.<market>``, ``"*"`` for the rest): the market's total (``min``, ``max``, changes
  in % of its current total), its share of the national total, ``fixed`` (keep its current allocation
  cell by cell), and its own channels' rules (``markets.<market>.channels``, as a market plan's
  ``channels``, ``min_on`` included);
* ``history``: each cell against its own market's history (cap, flags, extrapolation).

Histories are aligned at their last week (the markets share a calendar); the common length is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmm_pipeline.metrics import hdi
from mmm_pipeline.optimize.budget import HDI_PROB, BudgetResult, optimize_problem
from mmm_pipeline.optimize.constraints import (
    Problem,
    Rule,
    _as_current,
    _as_history,
    amount_rules,
    build_problem,
    channel_rules,
    history_rules,
)
from mmm_pipeline.optimize.plan import Plan, PlanError
from mmm_pipeline.optimize.response import ResponseModel, SaturationBlock

Spend = Mapping[str, float] | pd.Series | np.ndarray


def cell_label(market: str, channel: str) -> str:
    """A cell's name in rule descriptions and flags: ``<market>.<channel>``."""
    return f"{market}.{channel}"


def stack_responses(responses: Mapping[str, ResponseModel]) -> ResponseModel:
    """The markets' responses side by side: one response whose channels are the cells, market by market
    in the mapping's order and each market's channels in its model's order.

    Each market's KPI scale is folded into its ``beta`` (the stack's scale is 1), shorter adstock reaches
    are padded with zero weights, and every market is thinned to the smallest number of draws (see the
    module docstring). Saturation blocks of the same kind are merged (one block for the usual case of one
    kind everywhere, which the response evaluates without gathering).
    """
    if not responses:
        raise ValueError("a geo budget needs at least one market's response")
    n_draws = min(r.n_draws for r in responses.values())
    models = [
        r if r.n_draws == n_draws else r.subset(np.round(np.linspace(0, r.n_draws - 1, n_draws)).astype(int))
        for r in responses.values()
    ]
    l_max = max(r.l_max for r in models)
    weights, beta, scales, observed, labels = [], [], [], [], []
    kinds: dict[str, tuple[list[np.ndarray], dict[str, list[np.ndarray]]]] = {}
    offset = 0
    for market, r in zip(responses, models, strict=True):
        pad = np.zeros((l_max - r.l_max, n_draws, r.n_channels))
        weights.append(np.concatenate([r.weights, pad], axis=0))
        beta.append(r.beta * r.kpi_scale)
        scales.append(r.spend_scale)
        # 0 = no observed maximum: the posterior everywhere (ResponseModel.observed_max)
        observed.append(
            np.zeros((n_draws, r.n_channels))
            if r.observed_max is None
            else np.broadcast_to(r.observed_max, (n_draws, r.n_channels))
        )
        labels += [cell_label(market, c) for c in r.channels]
        for block in r.saturation:
            idx, params = kinds.setdefault(block.kind, ([], {}))
            idx.append(block.channels + offset)
            for name, value in block.params.items():
                params.setdefault(name, []).append(value)
        offset += r.n_channels
    blocks = []
    for kind, (idx, params) in kinds.items():
        channels = np.concatenate(idx)
        order = np.argsort(channels, kind="stable")
        blocks.append(
            SaturationBlock(
                kind, channels[order], {k: np.concatenate(v, axis=1)[:, order] for k, v in params.items()}
            )
        )
    any_observed = any(r.observed_max is not None for r in models)
    return ResponseModel(
        tuple(labels), np.concatenate(weights, axis=2), np.concatenate(beta, axis=1), blocks,
        np.concatenate(scales), 1.0, np.concatenate(observed, axis=1) if any_observed else None,
    )  # fmt: skip


def build_geo_problem(
    plan: Plan,
    channels: Mapping[str, Sequence[str]],
    *,
    current: Mapping[str, Spend] | None = None,
    history: Mapping[str, pd.DataFrame | np.ndarray] | None = None,
    groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None = None,
) -> Problem:
    """Resolve a geo ``plan`` against each market's ``channels`` (market -> its model's channels): a
    :class:`Problem` over the cells (see the module docstring for the rules).

    ``current``: per market, its current weekly spend per channel or an ``(H, C)`` plan (as
    :func:`build_problem`'s ``current``); default each market's average of its last ``current_weeks``
    history weeks. ``history``: per market, its recent weekly spend (as :func:`build_problem`'s), for
    every market or none. Raises :class:`PlanError` naming the plan key (unknown market or channel...)
    and ``ValueError`` naming the market for spend that cannot be used.
    """
    src = plan.source
    if plan.scope != "geo":
        raise PlanError(src, "scope", "one budget across markets needs a geo plan: set 'scope: geo'")
    markets = list(channels)
    if not markets:
        raise ValueError("a geo budget needs at least one market")
    if history is not None and set(history) != set(markets):
        raise ValueError(
            f"give the spend history of every market or none: got {sorted(history)} for {markets}"
        )
    weeks = plan.horizon.weeks
    cells = [(m, c) for m in markets for c in channels[m]]
    labels = tuple(cell_label(m, c) for m, c in cells)
    n_cells = len(cells)
    currents, hists = [], []
    for m in markets:
        try:
            hist = None if history is None else _as_history(history[m], channels[m])
            spend = None if current is None else current.get(m)
            currents.append(_as_current(spend, hist, channels[m], weeks, plan.current_weeks))
        except ValueError as exc:
            raise ValueError(f"market {m}: {exc}") from None
        hists.append(hist)
    current_plan = np.concatenate(currents, axis=1)  # (H, cells)
    stacked_history = None
    if history is not None:
        common = min(h.shape[0] for h in hists)
        stacked_history = np.concatenate([h[h.shape[0] - common :] for h in hists], axis=1)

    # National rules: a market plan over the channels' national totals, carried to their cells.
    national_channels = list(dict.fromkeys(c for m in markets for c in channels[m]))
    n_nat = len(national_channels)
    lift = np.zeros((weeks * n_nat, weeks * n_cells))  # national variable -> its cells
    for j, (_, c) in enumerate(cells):
        k = national_channels.index(c)
        for t in range(weeks):
            lift[t * n_nat + k, t * n_cells + j] = 1.0
    national_current = current_plan @ lift[:n_nat, :n_cells].T  # (H, national channels)
    national_plan = plan.model_copy(
        update={"scope": "market", "markets": {}, "history": type(plan.history)()}
    )
    national = build_problem(national_plan, national_channels, current=national_current, groups=groups)
    rules = [_lifted(rule, lift) for rule in national.rules]

    # Per-market rules.
    n = weeks * n_cells
    all_row = np.ones(n)

    def market_row(m: str) -> np.ndarray:
        row = np.zeros(n)
        for j, (market, _) in enumerate(cells):
            if market == m:
                row[j::n_cells] = 1.0
        return row

    for name in plan.markets:
        if name != "*" and name not in markets:
            raise PlanError(src, f"markets.{name}", f"unknown market; known: {markets}")
    entries = [(m, plan.markets[m], f"markets.{m}", "") for m in markets if m in plan.markets]
    if "*" in plan.markets:
        entries += [(m, plan.markets["*"], "markets.*", f"[{m}]") for m in markets if m not in plan.markets]
    for m, rule, key, suffix in entries:
        own = [j for j, (market, _) in enumerate(cells) if market == m]
        if rule.fixed:
            fixed = {t * n_cells + j: float(current_plan[t, j]) for j in own for t in range(weeks)}
            amount = float(current_plan[:, own].sum())
            rules.append(Rule(f"{key}.fixed{suffix}", f"{m} kept at its current {amount:,.0f}", var_lb=fixed,
                              var_ub=dict(fixed)))  # fmt: skip
            continue
        row = market_row(m)
        rules += amount_rules(
            key, suffix, f"{m} total", row, float(current_plan[:, own].sum()), rule.min, rule.max,
            rule.min_change_pct, rule.max_change_pct,
        )  # fmt: skip
        for side, share in (("min", rule.min_share), ("max", rule.max_share)):
            if share is None:
                continue
            lo, hi = (0.0, np.inf) if side == "min" else (-np.inf, 0.0)
            op = ">=" if side == "min" else "<="
            rules.append(
                Rule(f"{key}.{side}_share{suffix}", f"{m} total {op} {share:.0%} of the national total",
                     (row - share * all_row)[None], np.array([lo]), np.array([hi]))
            )  # fmt: skip
        for channel in rule.channels:
            if channel != "*" and channel not in channels[m]:
                raise PlanError(
                    src,
                    f"{key}.channels.{channel}",
                    f"unknown channel of market {m}; known: {list(channels[m])}",
                )
        for j in own:
            channel = cells[j][1]
            if channel in rule.channels:
                rules += channel_rules(rule.channels[channel], f"{key}.channels.{channel}", suffix,
                                       labels[j], j, current_plan)  # fmt: skip
            elif "*" in rule.channels:
                rules += channel_rules(rule.channels["*"], f"{key}.channels.*", f"{suffix}[{channel}]",
                                       labels[j], j, current_plan)  # fmt: skip

    hist_min, hist_max, always_on, cap_rules = history_rules(plan, stacked_history, labels, weeks)
    rules += cap_rules
    channel_group = {
        label: national.channel_group.get(c, "") for label, (_, c) in zip(labels, cells, strict=True)
    }
    return Problem(
        plan, labels, weeks, national.steady_state, current_plan, stacked_history,
        current_plan[-1] if plan.horizon.after == "current" else None, national.budget, rules,
        national.groups, channel_group, hist_min, hist_max, always_on,
    )  # fmt: skip


def _lifted(rule: Rule, lift: np.ndarray) -> Rule:
    """A national rule on the cells: rows through ``lift``; a national variable's bounds (a fixed
    channel's weekly spend) become rows on the sum of its cells."""
    rows, los, his = [], [], []
    if rule.a is not None:
        rows.append(rule.a @ lift)
        los.append(rule.lo)
        his.append(rule.hi)
    for i in sorted({*rule.var_lb, *rule.var_ub}):
        rows.append(lift[i][None])
        los.append(np.array([rule.var_lb.get(i, -np.inf)]))
        his.append(np.array([rule.var_ub.get(i, np.inf)]))
    if rule.min_on is not None:  # refused by the plan's validation; kept out for good measure
        raise ValueError(f"{rule.name}: a national channel cannot be semi-continuous")
    return Rule(rule.name, rule.description, np.concatenate(rows), np.concatenate(los), np.concatenate(his))


@dataclass
class GeoBudgetResult:
    """A recommended split of one total over markets x channels.

    ``cells`` (one row per market x channel): ``market, channel`` and the columns of
    :attr:`BudgetResult.recommendation` (current, recommended, change, contribution with HDI, ROAS,
    marginal ROAS, range flag, binding rule and shadow price; shares are of the national total).
    ``markets`` (one row per market): ``market, current, recommended, change, change_pct, share_current,
    share_recommended, contribution_current_mean, contribution_mean, contribution_hdi_low,
    contribution_hdi_high, uplift_mean, uplift_hdi_low, uplift_hdi_high, prob_uplift_positive,
    roas_current, roas_recommended`` (uplift per draw, recommended minus current, in that market).
    ``summary`` (one row): :attr:`BudgetResult.summary` for the national total (uplift with HDI,
    same-mix uplift...) plus ``n_markets, n_cells``. ``result``: the optimization on the cells.
    """

    plan: Plan
    markets: list[str]
    cells: pd.DataFrame
    market_totals: pd.DataFrame
    summary: pd.DataFrame
    result: BudgetResult

    @property
    def flags(self) -> list[str]:
        return self.result.flags


def optimize_geo_budget(
    plan: Plan,
    responses: Mapping[str, ResponseModel],
    *,
    current: Mapping[str, Spend] | None = None,
    history: Mapping[str, pd.DataFrame | np.ndarray] | None = None,
    groups: Mapping[str, str] | Mapping[str, Sequence[str]] | None = None,
    n_starts: int = 3,
    seed: int = 0,
) -> GeoBudgetResult:
    """Split a geo ``plan``'s total over every market x channel with each market's ``responses``.

    ``current``/``history``/``groups``: see :func:`build_geo_problem`. Raises :class:`PlanError` for a
    plan that does not fit the markets, :class:`mmm_pipeline.optimize.InfeasiblePlanError` (naming the
    conflicting rules, national or per market) before any optimization.
    """
    problem = build_geo_problem(
        plan, {m: r.channels for m, r in responses.items()}, current=current, history=history, groups=groups
    )
    stacked = stack_responses(responses)
    result = optimize_problem(problem, stacked, n_starts=n_starts, seed=seed, search="faces")
    markets = list(responses)
    cell_market = [m for m in markets for _ in responses[m].channels]
    cells = result.recommendation.drop(columns="channel")
    cells.insert(0, "channel", [c for m in markets for c in responses[m].channels])
    cells.insert(0, "market", cell_market)

    rows = []
    national_current = float(problem.current.sum())
    national_recommended = float(result.recommended.sum())
    for m in markets:
        own = np.array([market == m for market in cell_market])
        cur, rec = float(problem.current[:, own].sum()), float(result.recommended[:, own].sum())
        g_cur = result.contribution_current_draws[:, own].sum(axis=1)
        g_rec = result.contribution_draws[:, own].sum(axis=1)
        uplift = g_rec - g_cur
        low, high = hdi(g_rec, HDI_PROB)
        u_low, u_high = hdi(uplift, HDI_PROB)
        rows.append(
            {
                "market": m,
                "current": cur,
                "recommended": rec,
                "change": rec - cur,
                "change_pct": 100 * (rec / cur - 1) if cur > 0 else np.nan,
                "share_current": cur / national_current if national_current > 0 else np.nan,
                "share_recommended": rec / national_recommended if national_recommended > 0 else np.nan,
                "contribution_current_mean": float(g_cur.mean()),
                "contribution_mean": float(g_rec.mean()),
                "contribution_hdi_low": float(low),
                "contribution_hdi_high": float(high),
                "uplift_mean": float(uplift.mean()),
                "uplift_hdi_low": float(u_low),
                "uplift_hdi_high": float(u_high),
                "prob_uplift_positive": float((uplift > 0).mean()),
                "roas_current": float(g_cur.mean() / cur) if cur > 0 else np.nan,
                "roas_recommended": float(g_rec.mean() / rec) if rec > 0 else np.nan,
            }  # fmt: skip
        )
    summary = result.summary.assign(n_markets=len(markets), n_cells=len(cell_market))
    return GeoBudgetResult(plan, markets, cells, pd.DataFrame(rows), summary, result)
