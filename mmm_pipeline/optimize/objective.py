"""Objectives over posterior draws: per-draw value (KPI, ROI, profit, blend) and a risk summary.

Every objective is ``R(v_1(x), ..., v_S(x))``: a per-draw value ``v_s`` of the allocation ``x`` summarised
over the draws by a risk functional ``R``. ``R`` is the mean, a mean minus ``lam`` standard deviations,
or an L-statistic (a weighted sum of the sorted values: CVaR is the mean of the lowest ``alpha`` share,
the quantile uses Harrell-Davis weights so it moves smoothly with the draws). Its gradient in the draws is
a weight vector ``omega`` (``dR/dv_s``), so the gradient in ``x`` is ``sum_s omega_s dv_s/dx``: one
vector-Jacobian product of the response, never a per-draw Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import special

from mmm_pipeline.optimize.plan import Objective, Risk


def risk_summary(values: np.ndarray, risk: Risk) -> tuple[float, np.ndarray]:
    """``R(values)`` for ``(S,)`` draws and ``omega = dR/dvalues`` ``(S,)`` (exact where the order of the
    draws is unique)."""
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    if risk.measure == "mean":
        return float(values.mean()), np.full(n, 1.0 / n)
    if risk.measure == "mean_minus_sd":
        mean, sd = values.mean(), values.std()
        omega = np.full(n, 1.0 / n)
        if sd > 0:
            omega = omega - risk.lam * (values - mean) / (n * sd)
        return float(mean - risk.lam * sd), omega
    order = np.argsort(values, kind="stable")
    weights = l_weights(n, risk)
    omega = np.empty(n)
    omega[order] = weights
    return float(weights @ values[order]), omega


def l_weights(n: int, risk: Risk) -> np.ndarray:
    """Weights on the ascending order statistics for ``cvar`` and ``quantile``."""
    if risk.measure == "cvar":
        k = risk.alpha * n
        full = int(np.floor(k))
        w = np.zeros(n)
        w[:full] = 1.0
        if full < n:
            w[full] = k - full
        return w / w.sum()
    if risk.measure == "quantile":
        a, b = (n + 1) * risk.q, (n + 1) * (1 - risk.q)
        cdf = special.betainc(a, b, np.arange(n + 1) / n)
        return np.diff(cdf)
    raise ValueError(f"{risk.measure} is not an L-statistic")


@dataclass(frozen=True)
class ObjectiveFunction:
    """Per-draw value of an allocation from its contribution draws and total spend.

    ``refs``: for a blend, each component's risk-summarised value at the current allocation (its scale).
    """

    objective: Objective
    refs: dict[str, float]
    current: np.ndarray | None = None
    """``(S,)`` per-draw value of the current allocation, subtracted before the risk summary when
    ``risk.on`` is ``gain``."""

    @classmethod
    def build(
        cls, objective: Objective, current_contribution: np.ndarray, current_spend: float
    ) -> ObjectiveFunction:
        """``current_contribution`` ``(S,)`` total contribution draws of the current allocation."""
        refs: dict[str, float] = {}
        if objective.kind == "blend":
            plain = cls(objective, {})
            for part in objective.weights or {}:
                v, _, _ = plain._values(part, current_contribution, max(current_spend, 1e-12))
                r, _ = risk_summary(v, objective.risk)
                refs[part] = abs(r) if abs(r) > 1e-12 else 1.0
        current = None
        if objective.risk.on == "gain":
            current = cls(objective, refs).values(current_contribution, current_spend)[0]
        return cls(objective, refs, current)

    def subset(self, draws: np.ndarray) -> ObjectiveFunction:
        """The same objective on a subset of the posterior draws (with the response's ``subset``)."""
        return replace(self, current=None if self.current is None else self.current[draws])

    @property
    def value_scale(self) -> float:
        """The size of the values (the mean absolute current value for a gain objective, else 0), to
        scale the solver's objective when the gain itself is near 0."""
        return 0.0 if self.current is None else float(np.abs(self.current).mean())

    def _values(self, kind: str, g: np.ndarray, spend: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-draw value, its derivative in the contribution and in the total spend."""
        n = g.shape[0]
        if kind == "kpi":
            return g, np.ones(n), np.zeros(n)
        if kind == "roi":
            spend = max(spend, 1e-12)
            return g / spend, np.full(n, 1.0 / spend), -g / spend**2
        if kind == "profit":
            m = self.objective.margin
            return m * g - spend, np.full(n, m), -np.ones(n)
        raise ValueError(kind)

    def values(self, g: np.ndarray, spend: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(v, dv/dg, dv/dspend)``, each ``(S,)``."""
        if self.objective.kind != "blend":
            return self._values(self.objective.kind, g, spend)
        total = [np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)]
        for part, weight in (self.objective.weights or {}).items():
            for acc, piece in zip(total, self._values(part, g, spend), strict=True):
                acc += weight / self.refs[part] * piece
        return total[0], total[1], total[2]

    def __call__(self, g: np.ndarray, spend: float) -> tuple[float, np.ndarray, float]:
        """Objective value, ``d/dg`` per draw ``(S,)`` and ``d/dspend``."""
        v, dv_dg, dv_ds = self.values(g, spend)
        if self.current is not None:
            v = v - self.current
        value, omega = risk_summary(v, self.objective.risk)
        return value, omega * dv_dg, float(omega @ dv_ds)
