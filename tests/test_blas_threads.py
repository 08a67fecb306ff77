"""Importing the package limits OpenBLAS to one thread, unless the user set the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = (
    "import numpy, mmm_pipeline, threadpoolctl, json; "
    "print(json.dumps(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() "
    "if i['user_api'] == 'blas'})))"
)


def _blas_threads(value: str | None) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if value is not None:
        env["OPENBLAS_NUM_THREADS"] = value
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_numpy_loaded_first_still_gets_one_thread() -> None:
    assert _blas_threads(None) == [1]


def test_a_value_that_is_not_a_count_does_not_break_the_import() -> None:
    assert _blas_threads("auto")  # imports, and leaves NumPy's pool as OpenBLAS set it
