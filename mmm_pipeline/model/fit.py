"""Sampling the MMM: sampler choice, compile-once cache, progress reporting, timings.

Compiling is the expensive part of a small MMM: nutpie's numba compilation of the graph takes tens of
seconds, sampling a few hundred weeks a few seconds. A continuous pipeline refits every week and
cross-validates over folds, so :class:`ModelCache` keeps compiled graphs keyed by everything that shapes
them (structure, priors, channels, controls, padded length) and later fits only swap data in (the one
packed data container, :class:`~mmm_pipeline.model.build.PackedData`): ``CompiledPyMCModel.with_data``
for nutpie, ``pm.set_data`` for PyMC's samplers. Because the time axis is padded to a multiple of
``spec.pad_weeks_to`` weeks, windows that differ by a few weeks share a graph.
"""

from __future__ import annotations

import inspect
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pymc as pm

from mmm_pipeline.model.build import (
    DATA_CONTAINER,
    ModelData,
    ScalingSpec,
    build_model,
    input_layout,
    model_inputs,
    pack_inputs,
    padded_length,
)
from mmm_pipeline.model.calibration import LiftTests, padded_tests
from mmm_pipeline.model.spec import ModelSpec

Progress = Callable[[str], None]

#: Plain-text rendering of nutpie's progress state (nutpie fills it with its template engine).
_NUTPIE_TEMPLATE = (
    "{{ total_finished_draws }}/{{ total_draws }} draws (tuning included), "
    "{{ finished_chains }}/{{ num_chains }} chains done, divergences per chain "
    "[{% for chain in chains %}{{ chain.divergences }}{% if not loop.last %}, {% endif %}{% endfor %}]"
)


@dataclass
class FitResult:
    """A fitted model: the posterior plus everything needed to use it without refitting.

    ``timings`` (seconds): ``build`` (PyMC graph), ``compile`` (0 when a cached graph was reused),
    ``sample``, ``total``. The PyMC-hosted samplers compile inside ``pm.sample``, on every call:
    ``sample`` is ``pm.sample``'s own sampling clock and ``compile`` the rest of the call (compilation,
    initialization, trace conversion). For numpyro/blackjax, JAX compiles the sampler lazily, so its
    JIT compilation lands in ``sample``.
    """

    idata: az.InferenceData
    spec: ModelSpec
    scaling: ScalingSpec
    data: ModelData
    carry_in: np.ndarray
    n_time: int
    timings: dict[str, float]
    reused_graph: bool
    lift_tests: LiftTests = field(default_factory=LiftTests.empty)
    """The lift tests that entered the fit (those that ended by the window's last week)."""


@dataclass
class CacheEntry:
    """A built model and, after its first nutpie fit, its compiled form: what :class:`ModelCache` keeps."""

    model: pm.Model
    layout: tuple  # the names and shapes of the inputs it was built for (:func:`~.build.input_layout`)
    compiled: Any = None  # nutpie's CompiledPyMCModel, made on the first nutpie fit


@dataclass
class ModelCache:
    """Built (and, for nutpie, compiled) models by graph key; least recently used dropped beyond ``size``."""

    size: int = 4
    _entries: OrderedDict[str, CacheEntry] = field(default_factory=OrderedDict)

    def get(self, key: str) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


#: The process-wide cache ``fit`` uses unless given another.
DEFAULT_CACHE = ModelCache()


def graph_key(spec: ModelSpec, scaling: ScalingSpec, n_time: int, n_lift: int = 0) -> str:
    """What decides the compiled graph: structure and priors, channels, controls, the padded length and
    the padded number of lift tests.

    Scaling constants are not part of it: they only change data-container values.
    """
    return f"{spec.structure_key()}|{scaling.channels}|{scaling.controls}|{n_time}|{n_lift}"


def fit(
    data: ModelData,
    spec: ModelSpec | None = None,
    scaling: ScalingSpec | None = None,
    *,
    carry_in: np.ndarray | None = None,
    lift_tests: LiftTests | None = None,
    progress: Progress | None = None,
    cache: ModelCache | None = DEFAULT_CACHE,
    prior_scale: np.ndarray | None = None,
) -> FitResult:
    """Fit one market's MMM to ``data`` (a training window with KPI).

    ``scaling``: the champion's frozen constants for a refresh; computed from ``data`` when ``None``.
    ``carry_in``: raw spend of the ``l_max - 1`` weeks before the window (adstock carry-over into its
    first weeks); zeros when ``None``. ``lift_tests``: the market's experiments
    (:mod:`~mmm_pipeline.model.calibration`); only those that ended by the window's last week enter the
    fit, so a CV fold never sees an experiment from its test weeks. ``progress`` receives readable
    progress lines. ``cache=None`` builds and compiles afresh. ``prior_scale`` ``(C,)`` replaces the
    channel-effect prior's per-channel scale (the ``beta_prior_scale`` data container, by default from
    the spend shares): another prior on the same compiled graph (:mod:`~mmm_pipeline.model.sensitivity`).
    """
    spec = spec or ModelSpec()
    if spec.pooling != "none":
        raise ValueError(
            f"pooling: {spec.pooling} fits a market group as one model: use "
            "mmm_pipeline.model.pooled.fit_pooled, not the single-market fit"
        )
    scaling = scaling or ScalingSpec.from_data(data)
    report = progress or (lambda _message: None)
    sampler = spec.sampler
    start = time.perf_counter()
    n_time = padded_length(data.n_weeks, spec)
    if carry_in is None:
        carry_in = np.zeros((spec.l_max - 1, len(data.channels)))
    tests = LiftTests.empty() if lift_tests is None else lift_tests.ended_by(data.dates[-1])
    inputs = model_inputs(data, scaling, spec, carry_in=carry_in, n_time=n_time, lift_tests=tests)
    if prior_scale is not None:
        inputs["beta_prior_scale"] = np.asarray(prior_scale, dtype=float).reshape(len(data.channels))
    key = graph_key(spec, scaling, n_time, padded_tests(len(tests)))
    entry = cache.get(key) if cache is not None else None
    reused = entry is not None and (sampler.name != "nutpie" or entry.compiled is not None)
    if entry is None:
        entry = CacheEntry(build_model(inputs, scaling, spec), input_layout(inputs))
        if cache is not None:
            cache.put(key, entry)
    built = time.perf_counter()

    report(
        f"fitting {data.n_weeks} weeks ({data.dates[0].date()}..{data.dates[-1].date()}, padded to {n_time}) "
        + (f"and {len(tests)} lift test(s) " if len(tests) else "")
        + f"with {sampler.name}: {sampler.chains} chains x ({sampler.tune} tune + {sampler.draws} draws)"
        + ("; reusing the compiled graph" if reused else "")
    )
    idata, compile_s, sample_s = sample_entry(entry, inputs, spec, progress)
    timings = {
        "build": built - start,
        "compile": compile_s,
        "sample": sample_s,
        "total": time.perf_counter() - start,
    }
    idata.attrs["scaling"] = scaling.model_dump_json()
    idata.attrs["model_spec"] = spec.model_dump_json()
    idata.attrs["n_lift_tests"] = len(tests)
    return FitResult(idata, spec, scaling, data, carry_in, n_time, timings, reused, tests)


def sample_entry(
    entry: CacheEntry, inputs: dict[str, np.ndarray], spec: ModelSpec, progress: Progress | None
) -> tuple[az.InferenceData, float, float]:
    """Sample a built (and, for nutpie, compiled once) model on ``inputs``: ``(idata, compile_s,
    sample_s)``. One sampling step for the single-market and the pooled model, so both report the same
    timings and progress lines."""
    report = progress or (lambda _message: None)
    if input_layout(inputs) != entry.layout:  # a graph key that misses a shape would sample wrong data
        raise ValueError(f"inputs {input_layout(inputs)} do not fit the graph built for {entry.layout}")
    packed = pack_inputs(inputs)
    compile_s = 0.0
    if spec.sampler.name == "nutpie":
        import nutpie

        if entry.compiled is None:
            report("compiling the model with nutpie (numba)...")
            t0 = time.perf_counter()
            entry.compiled = nutpie.compile_pymc_model(entry.model)
            compile_s = time.perf_counter() - t0
            report(f"compiled in {compile_s:.1f} s")
        t0 = time.perf_counter()
        idata = _sample_nutpie(entry.compiled.with_data(**{DATA_CONTAINER: packed}), spec, progress)
        sample_s = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        idata = _sample_pymc(entry.model, packed, spec, progress)
        sample_s = time.perf_counter() - t0
        # pm.sample compiles (and initializes) on every call; its own clock covers the sampling loop only.
        loop_s = idata.posterior.attrs.get("sampling_time")
        if loop_s is not None and 0 < float(loop_s) <= sample_s:
            compile_s, sample_s = sample_s - float(loop_s), float(loop_s)
    divergences = int(idata.sample_stats["diverging"].sum())
    report(f"sampling done in {sample_s:.1f} s, {divergences} divergences")
    return idata, compile_s, sample_s


class _WithProgress:
    """A nutpie compiled model whose sampler reports progress through a text template callback.

    nutpie only renders its template progress in notebooks; elsewhere it draws a terminal bar. This
    proxy hands nutpie's own ``template_callback`` progress type to the sampler instead, so a pipeline
    (Dagster logs) gets the same information as readable lines. That hook is private nutpie API
    (``nutpie._lib``, ``_make_sampler``): :func:`progress_hook_available` checks it is there before it is
    used, and sampling falls back to nutpie's plain sampler (no progress lines) when it is not.
    """

    def __init__(self, compiled: Any, progress: Progress, rate_ms: int) -> None:
        self._compiled, self._progress, self._rate_ms = compiled, progress, rate_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled, name)

    def _make_sampler(
        self, settings: Any, init_mean: Any, cores: int, _progress_type: Any, store: Any
    ) -> Any:
        from nutpie import _lib

        start = time.perf_counter()

        def report(text: str) -> None:
            self._progress(f"{' '.join(text.split())}, {time.perf_counter() - start:.0f} s")

        progress_type = _lib.ProgressType.template_callback(self._rate_ms, _NUTPIE_TEMPLATE, cores, report)
        return self._compiled._make_sampler(settings, init_mean, cores, progress_type, store)


def progress_hook_available(compiled: Any) -> bool:
    """Whether nutpie still has the private pieces :class:`_WithProgress` relies on.

    Checked by signature, not by version: a nutpie release that renames ``_lib.ProgressType``, drops
    ``template_callback`` or changes ``_make_sampler``'s arguments makes this ``False`` and the fit runs
    without progress lines instead of failing.
    """
    try:
        from nutpie import _lib

        template = _lib.ProgressType.template_callback
        make = compiled._make_sampler
    except (ImportError, AttributeError):
        return False
    try:
        names = list(inspect.signature(make).parameters)
    except (TypeError, ValueError):
        return False
    return callable(template) and len(names) == 5


def _sample_nutpie(compiled: Any, spec: ModelSpec, progress: Progress | None) -> az.InferenceData:
    import nutpie

    s = spec.sampler
    hook = progress is not None and progress_hook_available(compiled)
    if progress is not None and not hook:
        progress(
            f"nutpie {getattr(nutpie, '__version__', '?')} lacks the progress hook this pipeline uses: "
            "sampling without progress lines"
        )
    model = _WithProgress(compiled, progress, rate_ms=2000) if hook else compiled
    controls = spec.control_variates and spec.pooling == "none"
    return nutpie.sample(
        model,
        draws=s.draws,
        tune=s.tune,
        chains=s.chains,
        cores=s.cores,
        seed=s.seed,
        target_accept=s.target_accept,
        progress_bar=hook,
        save_warmup=False,
        # the Stein control variates of the posterior means (ModelSpec.control_variates, insights.py);
        # single-market fits only (the pooled tables do not use them, and its parameters are many)
        store_gradient=controls,
        store_unconstrained=controls,
    )


def _sample_pymc(
    model: pm.Model, packed: np.ndarray, spec: ModelSpec, progress: Progress | None
) -> az.InferenceData:
    """PyMC's own NUTS, or numpyro/blackjax through ``pm.sample(nuts_sampler=...)``."""
    s = spec.sampler
    kwargs: dict[str, Any] = {}
    if s.name == "pymc" and progress is not None:
        kwargs["callback"] = _pymc_callback(progress, s.tune + s.draws)
    elif s.name in ("numpyro", "blackjax"):
        kwargs["nuts_sampler"] = s.name
    with model:
        pm.set_data({DATA_CONTAINER: packed})
        return pm.sample(
            draws=s.draws,
            tune=s.tune,
            chains=s.chains,
            # PyMC's default halves the CPU count (it assumes hyper-threads); match nutpie: a chain per CPU.
            cores=s.cores or min(s.chains, os.cpu_count() or 1),
            target_accept=s.target_accept,
            random_seed=s.seed,
            progressbar=False,
            compute_convergence_checks=False,
            **kwargs,
        )


def _pymc_callback(progress: Progress, total: int) -> Callable[..., None]:
    """A ``pm.sample`` callback reporting each chain at every 10% of its draws (tuning included)."""
    step = max(total // 10, 1)
    done: dict[int, int] = {}

    def callback(trace: Any, draw: Any) -> None:
        done[draw.chain] = done.get(draw.chain, 0) + 1
        n = done[draw.chain]
        if n % step == 0 or draw.is_last:
            phase = "tuning" if draw.tuning else "sampling"
            progress(f"chain {draw.chain}: {n}/{total} draws ({phase})" + (", done" if draw.is_last else ""))

    return callback
