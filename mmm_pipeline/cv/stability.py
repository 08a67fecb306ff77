"""Parameter stability across folds: does the MMM tell the same story as data accrues?

Per fold (:func:`fold_parameters`), for each channel: ROAS and contribution share over the fold's
training window, adstock ``alpha`` (and ``theta`` for delayed adstock), the saturation parameters and the
effect size ``beta``, each as posterior mean and 94% HDI (ArviZ). Each fold has its own scaling (from its
own training weeks), so parameters whose unit is a scaled quantity are converted to raw units to be
comparable across folds:

* ``beta``: weekly KPI at full saturation, in KPI units (scaled ``beta`` times the KPI scale);
* ``lam`` (logistic): per currency unit of weekly adstocked spend (scaled ``lam`` / spend scale);
* ``half_sat`` (hill): currency (scaled ``half_sat`` times spend scale); ``slope``, ``alpha``, ``theta``
  are unit-free.

Across folds (:func:`parameter_stability`, :func:`channel_stability`): the spread of the fold means. A
channel is flagged ``roas_unstable`` when the coefficient of variation of its fold-mean ROAS exceeds
the threshold (default 0.25). Expanding windows share most of their weeks, so fold estimates are
positively correlated and a large CV is a real swing, not sampling noise.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd

from mmm_pipeline import metrics
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.predict import PosteriorDraws
from mmm_pipeline.model.spec import ModelSpec

PARAMETER_COLUMNS = ["channel", "parameter", "mean", "hdi_low", "hdi_high"]
STABILITY_COLUMNS = [
    "channel", "parameter", "n_folds", "mean", "sd", "cv", "min", "max", "spread", "hdi_overlap",
]  # fmt: skip
CHANNEL_STABILITY_COLUMNS = [
    "channel", "n_folds", "roas_mean", "roas_sd", "roas_cv", "roas_min", "roas_max", "roas_hdi_overlap",
    "share_mean", "share_min", "share_max", "share_spread", "roas_unstable", "roas_cv_threshold",
]  # fmt: skip


def fold_parameters(
    idata: az.InferenceData,
    scaling: ScalingSpec,
    spec: ModelSpec,
    train: ModelData,
    carry_in: np.ndarray | None = None,
    hdi_prob: float = insights.HDI_PROB,
) -> pd.DataFrame:
    """Long table (:data:`PARAMETER_COLUMNS`) of one fold's per-channel parameters (see the module doc)."""
    summary = insights.channel_summary(idata, scaling, spec, train, carry_in, hdi_prob)
    draws = PosteriorDraws.from_idata(idata, spec)
    spend_scale = np.asarray(scaling.spend_scale)
    every = np.arange(len(scaling.channels))
    # name -> (values (S, k), the k channels they belong to): saturation parameters exist only for the
    # channels of their kind (``ModelSpec.saturation_by_channel``).
    per_channel: dict[str, tuple[np.ndarray, np.ndarray]] = {"alpha": (draws.alpha, every)}
    if draws.theta is not None:
        per_channel["theta"] = (draws.theta, every)
    for _, idx, params in draws.saturation_groups():
        for name, values in params.items():
            if name == "lam":
                values = values / spend_scale[idx]
            elif name == "half_sat":
                values = values * spend_scale[idx]
            per_channel[name] = (values, idx)
    per_channel["beta"] = (draws.beta * scaling.kpi_scale, every)
    rows = []
    for metric in ("roas", "share"):
        for channel in summary.index:
            rows.append(
                {
                    "channel": channel,
                    "parameter": metric,
                    "mean": summary.at[channel, f"{metric}_mean"],
                    "hdi_low": summary.at[channel, f"{metric}_hdi_low"],
                    "hdi_high": summary.at[channel, f"{metric}_hdi_high"],
                }
            )
    for name, (values, idx) in per_channel.items():
        bounds = metrics.hdi(values, hdi_prob)
        for i, c in enumerate(idx):
            rows.append(
                {
                    "channel": scaling.channels[c],
                    "parameter": name,
                    "mean": float(values[:, i].mean()),
                    "hdi_low": float(bounds[i, 0]),
                    "hdi_high": float(bounds[i, 1]),
                }
            )
    return pd.DataFrame(rows, columns=PARAMETER_COLUMNS)


def parameter_stability(parameters: pd.DataFrame) -> pd.DataFrame:
    """Per channel and parameter (:data:`STABILITY_COLUMNS`) over the folds of ``parameters`` (the
    fold tables stacked, with a ``fold`` column): ``n_folds``; ``mean``, ``sd`` (ddof 1; 0 for one fold),
    ``cv = sd / |mean|``, ``min``, ``max`` and ``spread = max - min`` of the fold means; ``hdi_overlap``:
    whether one value lies in every fold's HDI (``max(hdi_low) <= min(hdi_high)``)."""
    if parameters.empty:
        return pd.DataFrame(columns=STABILITY_COLUMNS)
    grouped = parameters.groupby(["channel", "parameter"], sort=False)
    table = grouped.agg(
        n_folds=("mean", "size"),
        sd=("mean", lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0),
        min=("mean", "min"),
        max=("mean", "max"),
        low=("hdi_low", "max"),
        high=("hdi_high", "min"),
        mean=("mean", "mean"),
    ).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        table["cv"] = table["sd"] / table["mean"].abs()
    table["spread"] = table["max"] - table["min"]
    table["hdi_overlap"] = table["low"] <= table["high"]
    return table[STABILITY_COLUMNS]


def channel_stability(parameters: pd.DataFrame, roas_cv_threshold: float = 0.25) -> pd.DataFrame:
    """One row per channel (:data:`CHANNEL_STABILITY_COLUMNS`): the ROAS and share rows of
    :func:`parameter_stability` side by side and ``roas_unstable = roas_cv > roas_cv_threshold``
    (never flagged from a single fold)."""
    stats = parameter_stability(parameters)
    if stats.empty:
        return pd.DataFrame(columns=CHANNEL_STABILITY_COLUMNS)
    roas = stats[stats["parameter"] == "roas"].set_index("channel")
    share = stats[stats["parameter"] == "share"].set_index("channel")
    table = pd.DataFrame(
        {
            "channel": roas.index,
            "n_folds": roas["n_folds"].to_numpy(),
            "roas_mean": roas["mean"].to_numpy(),
            "roas_sd": roas["sd"].to_numpy(),
            "roas_cv": roas["cv"].to_numpy(),
            "roas_min": roas["min"].to_numpy(),
            "roas_max": roas["max"].to_numpy(),
            "roas_hdi_overlap": roas["hdi_overlap"].to_numpy(),
            "share_mean": share["mean"].reindex(roas.index).to_numpy(),
            "share_min": share["min"].reindex(roas.index).to_numpy(),
            "share_max": share["max"].reindex(roas.index).to_numpy(),
            "share_spread": share["spread"].reindex(roas.index).to_numpy(),
        }
    )
    table["roas_unstable"] = (table["n_folds"] > 1) & (table["roas_cv"] > roas_cv_threshold)
    table["roas_cv_threshold"] = roas_cv_threshold
    return table[CHANNEL_STABILITY_COLUMNS]
