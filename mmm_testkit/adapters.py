"""Adapters from a synthetic world to the product's own types, for tests and benchmarks.

They live in the kit, not in the model or optimizer: product code never needs a synthetic world, and
keeping the conversion here leaves ``mmm_pipeline`` free of test-kit imports.
"""

from __future__ import annotations

import numpy as np

from mmm_pipeline.model import transforms
from mmm_pipeline.model.build import ModelData
from mmm_pipeline.optimize.response import ResponseModel, SaturationBlock
from mmm_testkit.synthetic import SyntheticWorld


def model_data(world: SyntheticWorld, market: str | None = None) -> ModelData:
    """A synthetic world's observable data (spend, controls, KPI) for one market."""
    market = world._market(market)
    controls = world.controls[world.controls["market"] == market]
    wide = controls.pivot(index="date", columns="control", values="value").reindex(world.dates)
    kpi = world.kpi[world.kpi["market"] == market].set_index("date")[world.kpi_name]
    return ModelData(
        world.dates, world.spend_matrix(market), wide.to_numpy(dtype=float),
        kpi.reindex(world.dates).to_numpy(dtype=float), tuple(world.channels), tuple(wide.columns),
    )  # fmt: skip


def true_response(world: SyntheticWorld, market: str | None = None) -> ResponseModel:
    """A synthetic world's TRUE response as a one-draw model (effects after all breaks), for scoring."""
    market = world._market(market)
    truths = [world.truth.channel(c, market) for c in world.channels]
    after = np.ones(len(truths))
    for b in world.truth.breaks:
        after[world.channels.index(b.channel)] *= b.effect_multiplier
    l_max = max(t.l_max for t in truths)
    weights = np.zeros((l_max, 1, len(truths)))
    for i, t in enumerate(truths):
        w = transforms.adstock_weights(t.adstock, t.l_max, alpha=t.alpha)
        weights[: t.l_max, 0, i] = w
    blocks = []
    for kind in ("logistic", "hill"):
        idx = np.array([i for i, t in enumerate(truths) if t.saturation == kind], dtype=int)
        if idx.size:
            params = {
                p: np.array([[truths[i].saturation_params[p] for i in idx]])
                for p in truths[idx[0]].saturation_params
            }
            blocks.append(SaturationBlock(kind, idx, params))
    beta = np.array([[t.beta for t in truths]]) * after
    return ResponseModel(tuple(world.channels), weights, beta, blocks, np.ones(len(truths)), 1.0)
