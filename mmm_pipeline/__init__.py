"""Continuous Marketing Mix Modeling pipeline: Dagster assets over DuckDB, PyMC and SciPy.

Importing the package limits OpenBLAS to one thread per process (unless ``OPENBLAS_NUM_THREADS`` is
already set). Why: the pipeline's linear algebra is small (draws x parameters: the control-variate
weights, ArviZ diagnostics, the optimizer's curves), and it runs beside nutpie's chain threads, the
other markets' runs and Dagster's own processes. OpenBLAS's thread pool then costs far more than it
saves: an 800 x 64 SVD took 0.1-0.2 s with the default pool and 2-7 ms with one thread on a 2-core
machine under load, and a fit's insight tables 6.8 s against 1.0 s (``benchmarks/bench_blas_threads.py``).
Every process that runs pipeline code imports this package first (the CLI, the code location Dagster's
run workers and dask workers load), so the setting holds in all of them. The environment variable
covers BLAS libraries loaded later (SciPy's, which numba-compiled samplers call); ``threadpoolctl``
the ones already loaded (NumPy's, when the caller imported NumPy first).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from threadpoolctl import threadpool_limits  # noqa: E402  (after the variable: it may load NumPy)

_threads = os.environ["OPENBLAS_NUM_THREADS"].strip()
# A value OpenBLAS itself would not read as a count (empty, "auto") leaves the loaded pools as they are.
if _threads.isdigit() and int(_threads) > 0:
    threadpool_limits(limits=int(_threads), user_api="blas")
