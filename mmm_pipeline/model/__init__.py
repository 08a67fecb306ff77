"""Model stage: the Bayesian marketing mix model of one market (PyMC), its refit, gate and registry.

``transforms`` (adstock and saturation maths, shared with the optimizer), ``spec`` (configuration),
``build`` (data, frozen scaling, PyMC graph), ``fit`` (samplers, compile-once cache, progress),
``predict`` (NumPy posterior predictive with adstock carry-in), ``insights`` (summaries,
decomposition, ROAS, response curves, diagnostics), ``calibration`` (lift tests), ``remedies``,
``refit`` (one market's weekly refit), ``promotion`` (the gate), ``registry`` (fits and champions in
DuckDB) and ``plots``. ``pooled`` is the partially pooled model of a market group (``spec.pooling:
partial``) and ``market_insights`` its per-market and national tables.

The package imports nothing on its own, so that importing ``mmm_pipeline.model.transforms`` (as the
optimizer does) does not load PyMC.
"""
