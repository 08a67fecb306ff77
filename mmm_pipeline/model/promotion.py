"""When a fit may become the champion: the diagnostics gate and the cross-validation rule, pure functions.

Kept apart from the registry and the Dagster checks so the same rules decide promotion, fail the asset
checks, and can be tested on plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mmm_pipeline.model.registry import CVRecord
from mmm_pipeline.model.settings import GateConfig


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
    """In-sample fit rules missed: R² and MAPE, both off by default (rules set to ``null`` are skipped)."""
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
    min_skill: float | None = None,
) -> list[str]:
    """Cross-validation rules a challenger misses: the MMM must have forecast at least one fold, its CV
    CRPS skill against seasonal-naive must exceed ``min_skill`` (``gate.min_cv_skill``: the data-relative
    fit rule, when the skill could be measured), and its CV CRPS must not be more than
    ``max_crps_increase`` above the champion's (when both have one).

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
    skill = cv.overall.get("mmm", {}).get("crps_skill")
    if min_skill is not None and skill is not None and math.isfinite(skill) and not skill > min_skill:
        return [
            f"cross-validated CRPS skill {skill:+.3f} against seasonal-naive is not above {min_skill:g}: "
            "out of sample the model forecast no better than last year's same week"
        ]
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


def _number(run: Mapping[str, object], key: str) -> float:
    value = run.get(key)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def next_steps(run: Mapping[str, object], gate: GateConfig, worst_parameters: str | None = None) -> list[str]:
    """What a user can do about a fit that was not promoted, one concrete step per rule it missed.

    ``run`` is the fit's ``models.model_runs`` row; ``worst_parameters`` the last attempt's parameters
    with the worst R-hat/ESS (``fit_attempts``), which name the channels to look at.
    """
    steps: list[str] = []
    focus = f" (worst: {worst_parameters})" if worst_parameters else ""
    attempts = int(_number(run, "fit_attempts")) if math.isfinite(_number(run, "fit_attempts")) else 1
    tried = f"after {attempts} attempts with automatic remedies" if attempts > 1 else "on the first attempt"
    if _number(run, "divergences") > gate.max_divergences:
        steps.append(
            f"Divergences persisted {tried}{focus}: the posterior has regions the sampler cannot explore. "
            "Tighten the priors of the parameters named (model.spec.priors), merge or drop a channel whose "
            "spend barely varies, or allow more rungs (model.remedies.max_attempts, target_accept_steps)."
        )
    if not _number(run, "max_r_hat") <= gate.max_r_hat or not (
        _number(run, "min_ess_bulk") >= gate.min_ess_bulk
        and _number(run, "min_ess_tail") >= gate.min_ess_tail
    ):
        steps.append(
            f"The chains did not agree or mixed slowly {tried}{focus}. Usually two channels move together "
            "so the data cannot tell them apart: merge them (channels' group) or add a lift test for one; "
            "or simplify the model (fewer model.spec.n_fourier modes, a shorter l_max); or give the sampler "
            "more draws (model.remedies.max_draws, model.spec.sampler.chains)."
        )
    skill = _number(run, "cv_crps_skill")
    if gate.min_cv_skill is not None and math.isfinite(skill) and not skill > gate.min_cv_skill:
        steps.append(
            f"Out of sample the model forecast no better than last year's same week (CRPS skill "
            f"{skill:+.3f}). Check the KPI for breaks, outliers or a changed definition; add the controls "
            "that drive it (price, promotions, events, distribution); or deliver more history. To accept "
            "such a model anyway set model.gate.min_cv_skill: null."
        )
    if gate.min_r2 is not None and not _number(run, "r2") >= gate.min_r2:
        steps.append(
            f"In-sample R² {_number(run, 'r2'):.3f} is under the fixed floor model.gate.min_r2 = "
            f"{gate.min_r2:g}: on a noisy KPI lower it or switch it off (null) and rely on the "
            "cross-validated skill rule."
        )
    if gate.max_mape is not None and not _number(run, "mape") <= gate.max_mape:
        steps.append(
            f"In-sample MAPE is above model.gate.max_mape = {gate.max_mape:g}: raise it or switch it off."
        )
    if str(run.get("cv_status")) == "failed":
        steps.append("Every cross-validation fold failed: the fold errors are in model_cv_folds.")
    if not steps:
        steps.append("See promotion_blocked_by in latest_model_runs for the rule that blocked promotion.")
    return steps
