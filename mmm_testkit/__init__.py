"""Test kit of the repository, kept out of the product package ``mmm_pipeline``.

``synthetic`` generates worlds with a known ground truth (tests, benchmarks, ``mmm-pipeline synthetic``)
and ``simulation`` runs a break simulation through the real pipeline. It is installed with the
repository so that the CLI's ``synthetic`` command can write a world; no product module imports it
at module level.
"""
