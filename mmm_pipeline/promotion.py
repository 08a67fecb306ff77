"""When a fit may become the champion: the diagnostics gate, a pure function of its figures.

Kept apart from the registry and the Dagster checks so the same rules decide promotion, fail the asset
checks, and can be tested on plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import GateConfig


def convergence_failures(diagnostics: Mapping[str, float], gate: GateConfig) -> list[str]:
    """Sampler rules missed: R-hat, bulk/tail ESS, divergences (each message gives value and limit)."""
    d = diagnostics
    out = []
    if not d["max_r_hat"] <= gate.max_r_hat:  # also catches NaN
        out.append(f"max R-hat {d['max_r_hat']:.4f} > {gate.max_r_hat}")
    if not d["min_ess_bulk"] >= gate.min_ess_bulk:
        out.append(f"min bulk ESS {d['min_ess_bulk']:.0f} < {gate.min_ess_bulk:.0f}")
    if not d["min_ess_tail"] >= gate.min_ess_tail:
        out.append(f"min tail ESS {d['min_ess_tail']:.0f} < {gate.min_ess_tail:.0f}")
    if d["divergences"] > gate.max_divergences:
        out.append(f"{int(d['divergences'])} divergences > {gate.max_divergences}")
    return out


def fit_quality_failures(diagnostics: Mapping[str, float], gate: GateConfig) -> list[str]:
    """In-sample fit rules missed: R² and MAPE (rules set to ``null`` are skipped)."""
    d = diagnostics
    out = []
    if gate.min_r2 is not None and not d["r2"] >= gate.min_r2:
        out.append(f"in-sample R² {d['r2']:.3f} < {gate.min_r2}")
    if gate.max_mape is not None and not d["mape"] <= gate.max_mape:
        out.append(f"in-sample MAPE {d['mape']:.3f} > {gate.max_mape}")
    return out


def gate_failures(diagnostics: Mapping[str, float], gate: GateConfig) -> list[str]:
    """Every gate rule the fit misses; an empty list means it may be promoted."""
    return convergence_failures(diagnostics, gate) + fit_quality_failures(diagnostics, gate)
