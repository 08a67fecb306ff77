"""Bayesian marketing mix model of one market, in PyMC.

``spec`` (configuration), ``build`` (data, frozen scaling, PyMC graph), ``fit`` (samplers, compile-once
cache, progress), ``predict`` (NumPy posterior predictive with adstock carry-in), ``insights``
(summaries, decomposition, ROAS, response curves, diagnostics).
"""

from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.fit import FitResult, ModelCache, fit
from mmm_pipeline.model.predict import Prediction, predict
from mmm_pipeline.model.spec import ModelSpec, PriorSpec, SamplerSpec

__all__ = [
    "FitResult",
    "ModelCache",
    "ModelData",
    "ModelSpec",
    "Prediction",
    "PriorSpec",
    "SamplerSpec",
    "ScalingSpec",
    "fit",
    "predict",
]
