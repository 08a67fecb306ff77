"""OpenBLAS's thread pool against one thread for the pipeline's own linear algebra.

The package limits OpenBLAS to one thread per process (``mmm_pipeline/__init__.py``; an
``OPENBLAS_NUM_THREADS`` set by the user wins). This script shows why: for each thread count (the
machine's cores, then 1) a fresh child process with ``OPENBLAS_NUM_THREADS`` set fits one synthetic
market (104 weeks, 2 chains x 400 draws, the test suite's small model), then times what follows a fit:
the diagnostics, the insight tables (which compute the control-variate weights: one thin SVD of the
draws x Stein controls per table), a second fit on the compiled graph (sampling only), and an
800 x 64 SVD alone. Run it once on an idle machine and once beside other work (a test suite, another
fit): the pool's cost shows most when the cores are busy.

    .venv/bin/python benchmarks/bench_blas_threads.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(repeats: int) -> dict[str, float]:
    """The timings in this process (its OpenBLAS thread count comes from the environment)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from mmm_pipeline.model import insights
    from mmm_pipeline.model.fit import fit
    from mmm_pipeline.model.refit import insight_tables
    from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
    from mmm_testkit.adapters import model_data
    from mmm_testkit.synthetic import generate_world

    data = model_data(generate_world(seed=5, n_weeks=104))
    spec = ModelSpec(l_max=4, n_fourier=1, sampler=SamplerSpec(chains=2, draws=400, tune=400, seed=1))
    result = fit(data, spec)
    out: dict[str, float] = {"threads": max(i["num_threads"] for i in threadpool_info())}

    def best(step) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return min(times)

    out["diagnostics"] = best(
        lambda: insights.diagnostics(result.idata, result.scaling, spec, data, result.carry_in)
    )
    out["insight_tables"] = best(lambda: insight_tables(result))
    reseeded = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"seed": 2})})
    out["sampling"] = best(lambda: fit(data, reseeded).timings["sample"])
    matrix = np.random.default_rng(0).normal(size=(800, 64))
    out["svd_800x64"] = best(lambda: np.linalg.svd(matrix, full_matrices=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each timing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.repeats)))
        return
    cores = os.cpu_count() or 1
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({cores} cores)")
    header = ("OpenBLAS threads", "diagnostics", "insight tables", "sampling", "SVD 800x64")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (16, 12, 15, 9, 11), strict=True)))
    for threads in dict.fromkeys((cores, 1)):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{int(row['threads']):>16} {row['diagnostics']:>11.2f}s {row['insight_tables']:>14.2f}s "
            f"{row['sampling']:>8.2f}s {row['svd_800x64'] * 1000:>9.1f}ms"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
