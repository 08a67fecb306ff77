"""The model stage's config section (``model:``): structure and sampler, gate, remedies, refresh rules."""

from __future__ import annotations

import datetime as dt
import importlib.util
from typing import Literal

from pydantic import Field, model_validator

from mmm_pipeline.model.remedies import RemediesConfig
from mmm_pipeline.model.spec import ModelSpec
from mmm_pipeline.settings import StrictModel


class GateConfig(StrictModel):
    """What a fit must show to be promoted to champion (and serve optimization and reports).

    Convergence is strict and absolute (R-hat, ESS, divergences): a sampler that has not converged says
    nothing about the model. How well the model must fit is relative to the data at hand: a market whose
    weekly KPI is mostly noise has a low R² however right the model is, so the default asks the model to
    forecast better, out of sample, than the seasonal-naive baseline (last year's same week) on the same
    cross-validation weeks. A fit that misses a rule is registered for inspection but never promoted;
    the asset checks on ``model_fit`` and ``model_registry`` fail with the figures that missed.
    """

    max_r_hat: float = Field(1.01, ge=1.0)
    min_ess_bulk: float = Field(400.0, ge=0)
    min_ess_tail: float = Field(400.0, ge=0)
    max_divergences: int = Field(0, ge=0)
    min_cv_skill: float | None = Field(0.0, le=1.0)
    """Cross-validated CRPS skill against seasonal-naive (``1 - CRPS_mmm / CRPS_seasonal_naive``, pooled
    over the CV test weeks) must exceed this: 0 (default) means "forecasts better than last year's same
    week". Skipped when cross-validation is off or the data are too short for it; ``null`` switches the
    rule off."""
    min_r2: float | None = None
    """In-sample R² of the posterior mean, a fixed floor; ``null`` (default) switches the rule off."""
    max_mape: float | None = None
    """In-sample MAPE (0.1 = 10%); ``null`` (default) switches the rule off."""


class SensitivityConfig(StrictModel):
    """``model.sensitivity``: the alternative prior set, how often it is refitted, how short, and when a
    difference counts as material."""

    enabled: bool = True
    spend_share: Literal["opposite", "on", "off"] = "opposite"
    """The alternative's channel-effect prior: ``opposite`` (default) scales it by spend share when the
    model does not (``spec.beta_by_spend_share: false``) and makes it equal for every channel when the
    model does; ``on`` / ``off`` say which outright."""
    scale: float = Field(1.0, gt=0)
    """Multiplies every channel's effect-prior sd in the alternative: 2 is twice as wide, 0.5 half."""
    every_weeks: int = Field(4, ge=1)
    """Refit the alternative when the champion's last training week is at least this many weeks past the
    one of the last computation (or the champion's model or the alternative changed in another way: a new
    config, a first champion); in between the report shows the last result and its age."""
    chains: int = Field(2, ge=1)
    draws: int = Field(500, ge=10)
    tune: int = Field(500, ge=10)
    """Sampler settings of the alternative fit, each capped at the champion's own."""
    material_change: float = Field(0.25, gt=0)
    """A channel whose alternative ROAS mean differs from the champion's by more than this share is
    flagged as prior-sensitive."""


class RefreshConfig(StrictModel):
    """``model.refresh``: how a weekly refit takes in the new weeks (:mod:`mmm_pipeline.model.refresh`).

    ``sample`` (default) samples every refit afresh: each week's posterior is an independent check of
    the last. ``importance`` reweights the last sampled posterior (the anchor) by the new weeks'
    likelihood instead, in seconds and with no new Monte Carlo error in the move; the market is sampled
    again when the weights are unreliable (Pareto k above ``max_pareto_k``), when the anchor is
    ``max_weeks`` weeks old, when the model, its scaling, the anchor's weeks or the lift tests changed,
    when a drift event started the run, or when the reweighted posterior misses the gate. Measured in
    ``benchmarks/bench_refresh.py``: on the case study and two synthetic worlds its moves are as large
    as sampled refits' (control-variate means): most of a weekly move is the new week's information.
    """

    mode: Literal["sample", "importance"] = "sample"
    max_pareto_k: float = Field(0.7, gt=0, le=1.0)
    """PSIS's reliability threshold; 0.7 is the literature's for a few thousand draws."""
    max_weeks: int = Field(13, ge=1)
    """At most this many weeks past the anchor's last week: a quarter by default, so a market is sampled
    at least four times a year."""


class ModelConfig(StrictModel):
    """The weekly refit: model structure, priors and sampler (``spec``), gate and refresh rules."""

    spec: ModelSpec = ModelSpec()
    gate: GateConfig = GateConfig()
    remedies: RemediesConfig = RemediesConfig()
    """Automatic refits with adjusted sampler settings when a fit misses the convergence rules."""
    min_train_weeks: int = Field(52, ge=13)
    """A market with fewer modeled weeks fails with a clear error instead of fitting noise."""
    train_end: dt.date | None = None
    """Fit on weeks up to this date only (a hold-out); default: every week in the modeling table."""
    keep_scaling: bool = True
    """Refits reuse the champion's scaling constants (so priors and ROAS keep their meaning) while the
    channels and controls are unchanged; ``false`` recomputes them from each window."""
    max_roas_change: float = Field(0.3, gt=0)
    """A channel whose ROAS moves by more than this share against the champion raises a warning check."""
    max_cv_crps_increase: float | None = Field(0.1, ge=0)
    """A challenger whose cross-validated CRPS is more than this share above the champion's is not
    promoted (0.1: 10% worse); ``null`` switches the rule off."""
    refresh: RefreshConfig = RefreshConfig()
    """Sample every refit (default), or reweight the last sampled posterior when that is sound (see
    :class:`RefreshConfig`)."""
    sensitivity: SensitivityConfig = SensitivityConfig()
    """Each channel's ROAS under an alternative prior set, shown in the report
    (:mod:`~mmm_pipeline.model.sensitivity`)."""

    @model_validator(mode="after")
    def _sampler_installed(self) -> ModelConfig:
        """A sampler whose package is missing fails here, naming the key, not in the middle of a run."""
        name = self.spec.sampler.name
        if importlib.util.find_spec(name) is None:
            extra = " (with jax and jaxlib)" if name in ("numpyro", "blackjax") else ""
            raise ValueError(
                f"spec.sampler.name {name!r} needs the {name} package{extra}, which is not installed in "
                "this environment; use nutpie (default) or pymc, or install it"
            )
        return self
