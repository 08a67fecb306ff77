"""The ``execution:`` config section: which Dagster executor runs the per-market model steps, and where
the values passed between steps live so that workers on other machines can read them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mmm_pipeline.settings import StrictModel

#: What ``mmm-pipeline run --until`` can stop after, in pipeline order.
STAGES = ("ingest", "features", "model")

Executor = Literal["in_process", "multiprocess", "dask", "celery"]


class DaskConfig(StrictModel):
    """An existing dask.distributed cluster (``dask scheduler`` plus ``dask worker`` processes)."""

    scheduler_address: str | None = None
    """``tcp://HOST:8786``, the scheduler the workers joined; required with ``executor: dask``."""


class CeleryConfig(StrictModel):
    """A Celery broker and result backend that ``mmm-pipeline celery-worker`` processes listen on.

    Default: kombu's ``filesystem://`` transport and Celery's ``file://`` result backend (each result
    renamed into place once written, ``defs/executors.py``), both in ``folder``. Chosen because they
    come with the pip install (kombu and celery are dagster-celery's own dependencies) and need no
    server, no root and no network port: the broker is a folder whose message files a worker claims by
    an atomic rename, which every worker already reaches, since workers need the
    project folder anyway (the warehouse, the artifacts, the config file). A RabbitMQ or Redis server
    would be a service to install and keep running beside the project for nothing gained on one machine
    or a shared mount. For workers on machines without a shared folder, give a broker URL
    (``redis://HOST:6379/0``, ``amqp://...``) and a backend URL that they all reach.
    """

    broker: str | None = None
    """A Celery broker URL; default ``filesystem://`` in ``folder``."""
    backend: str | None = None
    """A Celery result backend URL; default a ``file://<folder>/results`` backend writing results whole."""
    folder: str | None = None
    """The filesystem broker's and result backend's folder (relative to the config file); default
    ``<paths.data_dir>/celery``."""


class ExecutionConfig(StrictModel):
    """How the CLI runs the model job of many markets.

    ``in_process`` (default): one market after another in the CLI's own process. It stays the default,
    also on one machine with two cores, because a fit's first cost is compiling its model graph (80 s
    against 3-7 s of sampling for each small fit of ``tests/test_executors.py`` on this machine), and
    one process compiles a graph once and reuses it for every later market and CV fold of the same
    shape, while the multiprocess executor starts a fresh process per step, which compiles again for
    the fit and for each fold: the one-market demo would pay several compiles instead of one.
    ``multiprocess``: each market's run at once (up to ``max_workers``), each run's steps in child
    processes. ``dask``: each market's run at once, every
    step a task on the dask cluster at ``dask.scheduler_address``; a dask worker process lives across
    tasks, so it too reuses compiled graphs. ``celery``: the same, every step a Celery task taken by the
    ``mmm-pipeline celery-worker`` processes listening on ``celery.broker``; a worker's pool process lives
    across tasks as well. With ``dask`` or ``celery`` the model job's executor is that one for runs
    launched from the UI and by sensors as well.
    """

    executor: Executor = "in_process"
    max_workers: int | None = Field(None, ge=1)
    """Market runs in flight at once (``multiprocess``, ``dask``, ``celery``), each orchestrated by its own
    process; default: the dask cluster's worker threads (``dask``), the machine's cores (``multiprocess``,
    ``celery``: runs beyond the workers' slots wait in the broker's queue)."""
    dask: DaskConfig = DaskConfig()
    celery: CeleryConfig = CeleryConfig()
    storage: str | None = None
    """Where values passed between steps (a fit's record, CV fold tasks and results) are pickled: a path
    (relative to the config file) or an fsspec URL (``s3://bucket/mmm``, ``gcs://...``; the fsspec
    package for it must be installed) that every worker can reach. Default
    ``<paths.artifacts>/dagster_io``."""

    @model_validator(mode="after")
    def _scheduler_for_dask(self) -> ExecutionConfig:
        if self.executor == "dask" and not self.dask.scheduler_address:
            raise ValueError(
                "executor 'dask' needs dask.scheduler_address (e.g. tcp://127.0.0.1:8786), the address "
                "`dask scheduler` prints"
            )
        return self
