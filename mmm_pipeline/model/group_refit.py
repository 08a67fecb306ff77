"""The weekly refit of a market group under ``model.spec.pooling: partial``, without Dagster: one pooled
fit, the gate on it as one unit, and every market's insight tables from its view of the joint posterior.

Why apart from :mod:`~mmm_pipeline.model.refit`: there a market is its own model, here the group is one
(:mod:`~mmm_pipeline.model.pooled`). The convergence figures are the joint posterior's (a market's
champion is only as sound as the shared national values it leans on), so the gate passes or fails the
group as a whole; the in-sample fit rules are checked per market and any market's miss fails the group.
Each market's tables are the single-market ones (:func:`~mmm_pipeline.model.refit.insight_tables`) of
its :meth:`~mmm_pipeline.model.pooled.PooledFitResult.market_fit`, so the optimizer, the report and BI
read a pooled champion exactly as an independent one; the national roll-up
(:mod:`~mmm_pipeline.model.market_insights`) is summed draw by draw over the joint posterior.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.market_insights import (
    market_channel_summary,
    market_decomposition,
    market_response_curves,
)
from mmm_pipeline.model.pooled import NATIONAL, PooledFitResult, fit_pooled
from mmm_pipeline.model.promotion import convergence_failures, fit_quality_failures
from mmm_pipeline.model.refit import ATTEMPT_COLUMNS, attempt_row, insight_tables
from mmm_pipeline.model.remedies import failure_kinds, next_remedy
from mmm_pipeline.model.settings import ModelConfig

#: The convergence figures of a fit; for a group, over the joint posterior.
CONVERGENCE_KEYS = ("max_r_hat", "min_ess_bulk", "min_ess_tail", "divergences", "n_draws")


@dataclass
class GroupRefitOutcome:
    """A group's refit: the pooled fit (its last attempt), the joint and per-market diagnostics, the
    gate's verdict for the group, each market's insight tables and the national roll-up."""

    fit: PooledFitResult
    diagnostics: dict[str, dict[str, float]]
    """Per market: the joint posterior's convergence figures and the market's own in-sample fit."""
    gate_failures: list[str]
    tables: dict[str, dict[str, pd.DataFrame]]
    """Per market, the tables of :func:`~mmm_pipeline.model.refit.insight_tables` plus ``fit_attempts``."""
    national: dict[str, pd.DataFrame]
    """``channel_summary``, ``decomposition`` and ``response_curves`` of the nation (``market`` column
    :data:`~mmm_pipeline.model.pooled.NATIONAL`)."""
    attempts: list[dict[str, object]] = field(default_factory=list)


def group_diagnostics(fit: PooledFitResult) -> dict[str, dict[str, float]]:
    """Each market's diagnostics with the convergence figures of the joint posterior.

    Every variable of the pooled model is in some market's view (national ones in all), so the worst
    R-hat and the smallest ESS over the views are the joint posterior's; R², MAPE and NRMSE stay each
    market's own.
    """
    own = {
        m: insights.diagnostics(view.idata, view.scaling, view.spec, view.data, view.carry_in)
        for m in fit.markets
        for view in [fit.market_fit(m)]
    }
    joint = {
        "max_r_hat": max(d["max_r_hat"] for d in own.values()),
        "min_ess_bulk": min(d["min_ess_bulk"] for d in own.values()),
        "min_ess_tail": min(d["min_ess_tail"] for d in own.values()),
        "divergences": int(fit.idata.sample_stats["diverging"].sum()),
    }
    return {m: {**d, **joint} for m, d in own.items()}


def group_gate_failures(diagnostics: Mapping[str, Mapping[str, float]], gate: object) -> list[str]:
    """The gate rules the group misses: the joint convergence rules once, the in-sample fit rules of
    every market (named). An empty list promotes every market's model."""
    first = next(iter(diagnostics.values()))
    return convergence_failures(first, gate) + [  # type: ignore[arg-type]
        f"market {m}: {failure}"
        for m, d in diagnostics.items()
        for failure in fit_quality_failures(d, gate)  # type: ignore[arg-type]
    ]


def refit_group(
    data: Mapping[str, ModelData],
    model: ModelConfig,
    scalings: Mapping[str, ScalingSpec],
    *,
    lift_tests: Mapping[str, LiftTests] | None = None,
    progress: Callable[[str], None] | None = None,
) -> GroupRefitOutcome:
    """Fit the pooled model of the group (``data``: each market's training window, the same weeks) with
    each market's ``scalings``, climb the remedies ladder as :func:`~mmm_pipeline.model.refit.refit_market`
    does while the joint posterior misses the gate's convergence rules, then compute every market's
    insight tables and the national roll-up."""
    if model.spec.pooling != "partial":
        raise ValueError(f"refit_group fits pooling: partial; the config has pooling: {model.spec.pooling}")
    report = progress or (lambda _message: None)
    gate, remedies, spec = model.gate, model.remedies, model.spec
    attempts: list[dict[str, object]] = []
    remedy_reason = None
    while True:
        attempt = len(attempts) + 1
        if attempt > 1:
            report(f"attempt {attempt} of at most {remedies.max_attempts}: {remedy_reason}")
        result = fit_pooled(data, spec, scalings, lift_tests=lift_tests, progress=progress)
        report("computing diagnostics (ArviZ) over the joint posterior")
        diagnostics = group_diagnostics(result)
        joint = next(iter(diagnostics.values()))
        failures = group_gate_failures(diagnostics, gate)
        seconds = result.timings["total"]
        attempts.append(
            attempt_row(attempt, spec, result.idata, joint, gate, failures, remedy_reason, seconds)
        )
        diverged, poorly_mixed = failure_kinds(joint, gate)
        remedy = next_remedy(spec.sampler, diverged, poorly_mixed, attempt, remedies)
        if not failures or remedy is None:
            break
        report(f"attempt {attempt} missed the gate ({'; '.join(failures)}): trying again")
        spec = spec.model_copy(update={"sampler": remedy.sampler})
        remedy_reason = remedy.reason
    if len(attempts) > 1:
        report(f"{'passed' if not failures else 'still missed'} the gate after {len(attempts)} attempts")
    report(f"computing insight tables of {len(result.markets)} markets and the national roll-up")
    attempt_table = pd.DataFrame(attempts, columns=list(ATTEMPT_COLUMNS))
    tables = {
        m: {**insight_tables(result.market_fit(m)), "fit_attempts": attempt_table} for m in result.markets
    }
    return GroupRefitOutcome(
        fit=result,
        diagnostics=diagnostics,
        gate_failures=failures,
        tables=tables,
        national=national_tables(result),
        attempts=attempts,
    )


def national_tables(fit: PooledFitResult) -> dict[str, pd.DataFrame]:
    """The national rows of the per-market tables of :mod:`~mmm_pipeline.model.market_insights`, each
    summed over the markets draw by draw, with the columns of the registry's tables of the same name."""
    args = (fit.idata, fit.scalings, fit.spec, fit.data)
    frames = {
        "channel_summary": market_channel_summary(*args, carry_in=fit.carry_in),
        "decomposition": market_decomposition(*args, carry_in=fit.carry_in),
        "response_curves": market_response_curves(*args),
    }
    out = {}
    for name, frame in frames.items():
        rows = frame[frame["market"] == NATIONAL].reset_index(drop=True)
        if "week" in rows:
            rows["week"] = pd.to_datetime(rows["week"]).dt.date
        out[name] = rows
    return out
