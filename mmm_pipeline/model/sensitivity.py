"""Prior sensitivity: each channel's ROAS under an alternative prior set, next to the champion's.

Why: a channel's ROAS can rest on the prior as much as on the data (on the case study PyMC-Marketing's
Insert ROAS is 54 with spend-share priors and 186 with its defaults), and a reader cannot see that from
one posterior. So the champion's window is fitted again with another channel-effect prior and the two
ROAS estimates are shown side by side, a channel flagged where they differ materially.

The alternative is stated by :class:`SensitivityConfig` and always changes only the channel-effect
prior's per-channel scale (``beta_channel``'s sd): scaled by spend share or equal for every channel
(by default the opposite of what the model does), optionally wider or narrower. That scale is a data
container of the graph (``beta_prior_scale``), so the alternative fit reuses the champion's compiled
graph: no compilation, short draws, cheap enough to run on a schedule (:func:`due`) in weekly runs.

Pure functions plus one fit: no Dagster, no warehouse (the ``prior_sensitivity`` asset wraps it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.fit import fit
from mmm_pipeline.model.settings import SensitivityConfig
from mmm_pipeline.model.spec import ModelSpec

#: The floor :func:`~mmm_pipeline.model.build.model_inputs` puts under ``n_channels * spend_share``.
_SHARE_FLOOR = 0.1


def spend_share_prior_scale(spec: ModelSpec, scaling: ScalingSpec, by_spend_share: bool) -> np.ndarray:
    """``(C,)`` the channel-effect prior's per-channel scale, as the graph's ``beta_prior_scale`` takes it:
    ``max(n_channels * spend_share, 0.1)`` by spend share, else ones."""
    n = len(scaling.channels)
    if not by_spend_share:
        return np.ones(n)
    return np.maximum(n * np.asarray(scaling.spend_share, dtype=float), _SHARE_FLOOR)


def alternative_prior_scale(spec: ModelSpec, scaling: ScalingSpec, cfg: SensitivityConfig) -> np.ndarray:
    """``(C,)`` the alternative's ``beta_prior_scale`` (see :class:`SensitivityConfig`)."""
    by_share = (not spec.beta_by_spend_share) if cfg.spend_share == "opposite" else cfg.spend_share == "on"
    return spend_share_prior_scale(spec, scaling, by_share) * cfg.scale


def unsupported(spec: ModelSpec) -> str | None:
    """Why the alternative cannot be fitted for ``spec`` (None when it can): the scale multiplies the
    effect prior's ``sigma``, which a prior such as ``Gamma(alpha, beta)`` does not have; a pooled model
    has its own effect hierarchy."""
    if spec.pooling != "none":
        return f"pooling {spec.pooling}: prior sensitivity covers single-market models"
    prior = spec.prior("beta_channel")
    if "sigma" not in prior.params:
        return f"the channel-effect prior ({prior.dist} {prior.params}) has no sigma to scale"
    return None


def describe(spec: ModelSpec, cfg: SensitivityConfig) -> str:
    """The alternative prior set against the model's, in words (the report states it)."""
    prior = spec.prior("beta_channel")
    by_share = (not spec.beta_by_spend_share) if cfg.spend_share == "opposite" else cfg.spend_share == "on"

    def shape(share: bool) -> str:
        return "scaled by each channel's spend share" if share else "the same for every channel"

    text = (
        f"channel-effect prior {prior.dist} {shape(by_share)}"
        + (f", {cfg.scale:g}x as wide" if cfg.scale != 1 else "")
        + f" (the model's: {shape(spec.beta_by_spend_share)})"
    )
    return text


def settings_hash(spec: ModelSpec, cfg: SensitivityConfig) -> str:
    """What decides the alternative fit apart from the data: the model's structure and priors and the
    alternative (a change of either is a reason to recompute, see :func:`due`)."""
    payload = {
        "structure": spec.structure_key(),
        "alternative": cfg.model_dump(include={"spend_share", "scale", "chains", "draws", "tune"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LastComputation:
    """The market's latest prior-sensitivity result: on which champion, its last week, which settings."""

    model_id: str
    train_end: dt.date
    settings_hash: str


def due(
    last: LastComputation | None,
    champion_id: str,
    champion_train_end: dt.date,
    current_hash: str,
    every_weeks: int,
) -> tuple[bool, str]:
    """Whether to fit the alternative for the champion now, and why (or why not)."""
    if last is None:
        return True, "no prior-sensitivity result for this market yet"
    if last.settings_hash != current_hash:
        return True, "the model's priors or the alternative prior set changed"
    if last.model_id == champion_id:
        return False, f"already computed on champion {champion_id}"
    weeks = (champion_train_end - last.train_end).days // 7
    if weeks < 0:
        return True, "the champion's window ends before the last computation's (a restated champion)"
    if weeks >= every_weeks:
        return True, f"the champion's window is {weeks} week(s) past the last computation's"
    return False, (
        f"last computed on {last.model_id} ({weeks} week(s) earlier; recomputed every {every_weeks} weeks)"
    )


@dataclass
class SensitivityResult:
    table: pd.DataFrame
    """Per channel: the champion's and the alternative's ROAS mean and 94% HDI, relative difference,
    ``material`` flag (:func:`sensitivity_table`)."""
    alternative: str
    chains: int
    draws: int
    tune: int
    max_r_hat: float
    divergences: int
    reused_graph: bool
    seconds: float


def sensitivity_table(
    champion: pd.DataFrame, alternative: pd.DataFrame, material_change: float
) -> pd.DataFrame:
    """Channel summaries (``channel``, ``roas_mean``, ``roas_hdi_low``, ``roas_hdi_high``) of the champion
    and of the alternative side by side, with ``relative_difference`` (alternative / champion - 1) and
    ``material`` (its magnitude above ``material_change``, or the champion's mean at 0 while the
    alternative's is not)."""
    columns = ["channel", "roas_mean", "roas_hdi_low", "roas_hdi_high"]
    left = champion.reset_index()[columns] if "channel" not in champion.columns else champion[columns]
    right = (
        alternative.reset_index()[columns] if "channel" not in alternative.columns else alternative[columns]
    )
    table = left.merge(
        right.rename(columns={c: f"alt_{c}" for c in columns[1:]}), on="channel", how="inner", validate="1:1"
    )
    if len(table) != len(left):
        missing = sorted(set(left["channel"]) - set(table["channel"]))
        raise ValueError(f"the alternative fit has no ROAS for channels {missing}")
    base = table["roas_mean"].abs()
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = (table["alt_roas_mean"] - table["roas_mean"]) / base.where(base > 0)
    table["relative_difference"] = relative
    table["material"] = relative.abs().gt(material_change) | (base.eq(0) & table["alt_roas_mean"].ne(0))
    return table


def run_sensitivity(
    data: ModelData,
    spec: ModelSpec,
    scaling: ScalingSpec,
    champion_channels: pd.DataFrame,
    cfg: SensitivityConfig,
    *,
    lift_tests: LiftTests | None = None,
    progress=None,  # noqa: ANN001 - Callable[[str], None] | None, as fit takes it
) -> SensitivityResult:
    """Fit the champion's model to its own window (``data``, the champion's frozen ``scaling`` and
    ``spec``) under the alternative prior set, with the short sampler settings of ``cfg`` (capped at the
    champion's), and compare each channel's ROAS with ``champion_channels`` (its channel summary).

    Raises ``ValueError`` when the alternative does not apply (:func:`unsupported`).
    """
    reason = unsupported(spec)
    if reason:
        raise ValueError(reason)
    s = spec.sampler
    short = s.model_copy(
        update={"chains": min(cfg.chains, s.chains), "draws": min(cfg.draws, s.draws),
                "tune": min(cfg.tune, s.tune)}
    )  # fmt: skip
    alt_spec = spec.model_copy(update={"sampler": short})
    start = time.perf_counter()
    result = fit(
        data, alt_spec, scaling, lift_tests=lift_tests, progress=progress,
        prior_scale=alternative_prior_scale(spec, scaling, cfg),
    )  # fmt: skip
    channels = insights.channel_summary(result.idata, scaling, alt_spec, data, result.carry_in)
    summary = insights.parameter_summary(result.idata, var_names=["beta_channel", "alpha"])
    return SensitivityResult(
        table=sensitivity_table(champion_channels, channels, cfg.material_change),
        alternative=describe(spec, cfg),
        chains=short.chains,
        draws=short.draws,
        tune=short.tune,
        max_r_hat=float(summary["r_hat"].max()),
        divergences=int(result.idata.sample_stats["diverging"].sum()),
        reused_graph=result.reused_graph,
        seconds=time.perf_counter() - start,
    )
