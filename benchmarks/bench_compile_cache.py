"""Can a compiled model be reused across processes? Compile time of a fresh process, cold and warm.

Why (issue 17, item 4): a weekly refit runs in a fresh process, and compilation dominates it (on the case
study 36 s of a 58 s fit). Within one process the compiled graph is already shared across markets and
folds (:class:`mmm_pipeline.model.fit.ModelCache`). Across processes the only caches are on disk:
PyTensor's compile directory (``PYTENSOR_FLAGS=compiledir=...``, by default under ``~/.pytensor``) and
numba's (``NUMBA_CACHE_DIR``). This measures what they save for the nutpie (numba) sampler, the default.

Each row is one child process that builds the same single-market model (a synthetic world, 156 weeks,
the default spec), compiles it with nutpie and samples 2 chains x 200 draws. The rows:

- ``cold``: an empty compile directory and numba cache (what a fresh machine or container pays);
- ``warm``: the same directories again (what the next weekly run pays when the directories persist);
- ``warm, other data``: the same directories, a different world of the same shape (next week's data).

The printed verdict says whether a warm cache cuts the compile time and by how much. The sampler's
results are compared too (same seed, same data: the posterior means must be identical), since a cache
that changed results would not be sound.

``--numba-opt 3,0`` measures numba's LLVM optimization level instead (``NUMBA_OPT``; numba's default
is 3; the test suite runs at 0, ``tests/conftest.py``): per level, warm caches of its own (one child
first, not counted), then ``--repeats`` children at ``--chains`` x ``--draws``; compile and sampling
seconds, and how far the posterior means of the levels are apart (same seed, same data).

Run::

    .venv/bin/python benchmarks/bench_compile_cache.py            # prints a table and the verdict
    .venv/bin/python benchmarks/bench_compile_cache.py --numba-opt 3,0 --repeats 2
    .venv/bin/python benchmarks/bench_compile_cache.py --numba-opt 3,0 --chains 4 --draws 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(seed: int, chains: int = 2, draws: int = 200) -> None:
    """Fit once in this process and print the timings as JSON (the parent reads the last line)."""
    t0 = time.perf_counter()
    from mmm_pipeline.model.fit import fit
    from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
    from mmm_testkit.adapters import model_data
    from mmm_testkit.synthetic import generate_world

    imported = time.perf_counter() - t0
    data = model_data(generate_world(seed=seed, n_weeks=156))
    spec = ModelSpec(sampler=SamplerSpec(chains=chains, draws=draws, tune=draws, seed=1))
    result = fit(data, spec, cache=None)
    means = result.idata.posterior["beta_channel"].mean(("chain", "draw")).values.round(6).tolist()
    print(json.dumps({"import": imported, **result.timings, "beta_means": means}))


def run_child(
    seed: int, compiledir: Path, numba_dir: Path, opt: str | None = None, chains: int = 2, draws: int = 200
) -> dict:
    env = {
        **os.environ,
        "PYTENSOR_FLAGS": f"compiledir={compiledir}",
        "NUMBA_CACHE_DIR": str(numba_dir),
    }
    if opt is not None:
        env["NUMBA_OPT"] = opt
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(seed), "--chains", str(chains), "--draws", str(draws)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_wall"] = time.perf_counter() - t0
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="cold/warm pairs, each with new directories")
    parser.add_argument("--numba-opt", help="compare numba optimization levels instead, e.g. 3,0")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=200, help="draws and tuning steps per chain")
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.chains, args.draws)
        return
    if args.numba_opt:
        compare_opt_levels(args)
        return
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            compiledir, numba_dir = Path(tmp) / "pytensor", Path(tmp) / "numba"
            for label, seed in (
                ("cold", args.seed),
                ("warm", args.seed),
                ("warm, other data", args.seed + 1),
            ):
                row = run_child(seed, compiledir, numba_dir)
                rows.append((repeat, label, row))
                print(
                    f"repeat {repeat} {label:<17} compile {row['compile']:6.1f} s  "
                    f"sample {row['sample']:5.1f} s  fit {row['total']:6.1f} s  "
                    f"process {row['process_wall']:6.1f} s",
                    flush=True,
                )
    cold = [r["compile"] for _, label, r in rows if label == "cold"]
    warm = [r["compile"] for _, label, r in rows if label == "warm"]
    same = all(
        r["beta_means"] == next(c for k, lab, c in rows if k == rep and lab == "cold")["beta_means"]
        for rep, label, r in rows
        if label == "warm"
    )
    saving = 1 - (sum(warm) / len(warm)) / (sum(cold) / len(cold))
    print(
        f"\ncompile, mean over {len(cold)} repeat(s): cold {sum(cold) / len(cold):.1f} s, warm "
        f"{sum(warm) / len(warm):.1f} s: the on-disk caches save {saving:.0%} of it"
    )
    print(f"same posterior means with a warm cache (same data, same seed): {'yes' if same else 'NO'}")


def compare_opt_levels(args: argparse.Namespace) -> None:
    """Compile and sampling seconds per numba optimization level, each on warm caches of its own."""
    means: dict[str, list[float]] = {}
    for opt in args.numba_opt.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            dirs = (Path(tmp) / "pytensor", Path(tmp) / "numba")
            run_child(args.seed, *dirs, opt, args.chains, args.draws)  # warms this level's caches
            for repeat in range(args.repeats):
                row = run_child(args.seed, *dirs, opt, args.chains, args.draws)
                means.setdefault(opt, row["beta_means"])
                print(
                    f"NUMBA_OPT={opt} repeat {repeat}: {args.chains} x {args.draws} draws  compile "
                    f"{row['compile']:5.1f} s  sample {row['sample']:5.1f} s  fit {row['total']:5.1f} s",
                    flush=True,
                )
    levels = list(means)
    apart = max(abs(a - b) for a, b in zip(means[levels[0]], means[levels[-1]], strict=True))
    print(f"beta_channel posterior means, level {levels[0]} against {levels[-1]}: {apart:.2g} apart at most")


if __name__ == "__main__":
    main()
