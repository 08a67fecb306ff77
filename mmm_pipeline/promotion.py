"""When a fit may become the champion: the diagnostics gate and the cross-validation rule, pure functions.

Kept apart from the registry and the Dagster checks so the same rules decide promotion, fail the asset
checks, and can be tested on plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .config import GateConfig
from .registry import CVRecord


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


def cv_failures(
    cv: CVRecord | None,
    champion: Mapping[str, object] | None,
    max_crps_increase: float | None,
    drift_triggered: bool = False,
) -> list[str]:
    """Cross-validation rules a challenger misses: the MMM must have forecast at least one fold, and
    its CV CRPS must not be more than ``max_crps_increase`` above the champion's (when both have one).

    A skipped CV (switched off, too little data) blocks nothing: the gate alone decides. A refit started
    by a drift event is not held to the champion's CV CRPS: that figure was measured on folds before the
    drift, while the challenger's last folds forecast the drifted weeks (harder by construction), and the
    event's evidence already shows the champion failing on them; comparing the two would keep the failing
    champion serving and the event open.
    """
    if cv is None or cv.status == "skipped":
        return []
    if cv.status == "failed":
        return ["cross-validation: the model failed on every fold"]
    if drift_triggered:
        return []
    challenger = cv.overall.get("mmm", {}).get("crps")
    incumbent = None if champion is None else champion.get("cv_crps")
    if (
        max_crps_increase is None
        or challenger is None
        or incumbent is None
        or not math.isfinite(float(incumbent))  # type: ignore[arg-type]
    ):
        return []
    limit = float(incumbent) * (1 + max_crps_increase)  # type: ignore[arg-type]
    if challenger > limit:
        return [
            f"cross-validated CRPS {challenger:,.4g} is over {max_crps_increase:.0%} above the champion's "
            f"{float(incumbent):,.4g}"  # type: ignore[arg-type]
        ]
    return []
