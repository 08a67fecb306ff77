"""Remedies before rejection: the bounded ladder of sampler settings a refit climbs when a fit misses the
convergence rules of the gate.

A fit that diverges or mixes poorly is usually a sampler problem, not a model problem: NUTS with a
smaller step (a higher ``target_accept``) and a longer warm-up gets through the curvature that made it
diverge, and more tuning and draws lift a short effective sample size or a borderline R-hat. Rejecting
the fit instead leaves a new user with no champion, no recommendation and no report. So the refit tries
again, each rung fitted to the failure seen, within a budget (``max_attempts``, caps on tune and
draws). Sampler settings are not part of the compiled graph's key, so every attempt reuses the compiled
model. Pure functions: the ladder is decided on plain numbers and tested without sampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmm_pipeline.model.spec import SamplerSpec


class RemediesConfig(BaseModel):
    """``model.remedies``: automatic refits with adjusted sampler settings when a fit misses the
    convergence rules of ``model.gate`` (on by default).

    Divergences: the next ``target_accept`` step above the current one and ``tune_factor`` times the
    tuning. R-hat or ESS short: ``tune_factor`` times the tuning and ``draws_factor`` times the draws.
    Both: both. Each attempt draws from a new seed. In-sample or CV rules are not sampler problems and
    get no retry.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_attempts: int = Field(3, ge=1, le=10)
    """Fits in all, the first included (3: at most two retries)."""
    target_accept_steps: list[float] = Field(default_factory=lambda: [0.98, 0.995])
    """The ``target_accept`` rungs for divergences, climbed one per attempt (beyond the configured one)."""
    tune_factor: float = Field(2.0, ge=1.0)
    draws_factor: float = Field(2.0, ge=1.0)
    max_tune: int = Field(4000, ge=10)
    max_draws: int = Field(4000, ge=10)

    @field_validator("target_accept_steps")
    @classmethod
    def _steps_in_range(cls, value: list[float]) -> list[float]:
        if any(not 0.5 < v < 1.0 for v in value):
            raise ValueError("every target_accept step must lie between 0.5 and 1 (exclusive)")
        return sorted(value)


@dataclass(frozen=True)
class Remedy:
    """The sampler settings of the next attempt and, in words, what changed and why."""

    sampler: SamplerSpec
    reason: str


def failure_kinds(diagnostics: Mapping[str, float], gate: object) -> tuple[bool, bool]:
    """``(diverged, poorly_mixed)`` against the gate's convergence thresholds.

    ``gate`` is a :class:`mmm_pipeline.model.settings.GateConfig` (read by attribute, so this module does not
    import the project config).
    """
    d = diagnostics
    diverged = d["divergences"] > gate.max_divergences  # type: ignore[attr-defined]
    r_hat = d["max_r_hat"]
    poorly_mixed = (
        not (math.isfinite(r_hat) and r_hat <= gate.max_r_hat)  # type: ignore[attr-defined]
        or not d["min_ess_bulk"] >= gate.min_ess_bulk  # type: ignore[attr-defined]
        or not d["min_ess_tail"] >= gate.min_ess_tail  # type: ignore[attr-defined]
    )
    return diverged, poorly_mixed


def next_remedy(
    sampler: SamplerSpec, diverged: bool, poorly_mixed: bool, attempt: int, cfg: RemediesConfig
) -> Remedy | None:
    """The settings for attempt ``attempt + 1`` after attempt ``attempt`` failed as described, or
    ``None`` when remedies are off, the attempt budget is spent, nothing failed that a sampler setting
    can fix, or every setting the failure calls for is already at its cap."""
    if not cfg.enabled or attempt >= cfg.max_attempts or not (diverged or poorly_mixed):
        return None
    update: dict[str, object] = {}
    reasons: list[str] = []
    tune = min(cfg.max_tune, math.ceil(sampler.tune * cfg.tune_factor))
    if diverged:
        higher = [step for step in cfg.target_accept_steps if step > sampler.target_accept]
        if higher:
            update["target_accept"] = higher[0]
            reasons.append(f"target_accept {sampler.target_accept:g} -> {higher[0]:g}")
    if tune > sampler.tune:
        update["tune"] = tune
        reasons.append(f"tune {sampler.tune} -> {tune}")
    if poorly_mixed:
        draws = min(cfg.max_draws, math.ceil(sampler.draws * cfg.draws_factor))
        if draws > sampler.draws:
            update["draws"] = draws
            reasons.append(f"draws {sampler.draws} -> {draws}")
    if not reasons:
        return None
    update["seed"] = sampler.seed + 1
    cause = " and ".join(
        [*(["divergences"] if diverged else []), *(["R-hat/ESS short"] if poorly_mixed else [])]
    )
    return Remedy(sampler.model_copy(update=update), f"{cause}: " + ", ".join(reasons))
