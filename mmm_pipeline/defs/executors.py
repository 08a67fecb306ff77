"""The model job's executor, chosen by the ``execution:`` config section, and the job in a form that
processes elsewhere can rebuild.

``dagster-dask`` runs each step of a run as a task on a dask.distributed cluster. Two of its known
limits shape what is here:

- It names every task ``<job>.<step key>`` (dagster-io/dagster#21418, open in dagster-dask 0.29.27):
  two runs of one job at once (two markets of ``refit_model``) submit the same task names, and dask
  hands the second run the first run's result instead of running its steps. :class:`PooledDaskExecutor`
  names tasks by run as well.
- It ignores op concurrency pools (it executes steps without the instance's concurrency context, as
  dagster-celery once did, pull requests dagster-io/dagster#30256 and #32411; dagster-celery 0.29.27's
  orchestrator claims the slots, see below). Steps in a pool (the DuckDB
  writers, ``WRITER_POOL``) therefore hold a cluster-wide ``distributed.Lock`` named after the pool
  while they run: one writer at a time on the whole cluster, wherever its worker runs.
- It cannot run dynamic outputs (dagster-io/dagster#9785); the CV folds are static outputs for that
  reason (``assets/cv.py``).
- It hands each worker the known state of the run from before it started, so a step does not know
  which upstream outputs exist, and a fan-in input (``cv_combine``'s list of fold results) silently
  drops them all as "skipped" (the CV of every fit came out ``skipped`` in our first test). Here the
  worker adds the outputs the run has recorded so far in the event log (its upstream steps finished
  before dask started it) to the known state.
- It passes the run (a ``DagsterRun``) to ``Client.submit`` as a plain argument; dask walks tuple
  arguments looking for futures, and a run with op concurrency (ours: the writer pool) holds a Dagster
  record that refuses iteration, so every submit fails ("Iteration is not allowed on `@record`
  RunOpConcurrency"). Here the step's arguments travel pickled, as one bytes value.

Everything else (the step levels, the worker function that rebuilds the job and executes one step,
events sent back to the run) is dagster-dask's own.

``dagster-celery`` (``execution.executor: celery``) is used as it comes: its orchestrator submits each
step as a Celery task when the step's inputs are ready, with the run's current known state, under the
instance's op concurrency (a writer step waits for the ``WRITER_POOL`` slot before it is submitted), and
Celery names tasks by unique ids; the dask limits above do not arise there, and dynamic outputs run.
What is here: the broker and backend from the ``execution.celery`` section (a folder by default, see
:class:`~mmm_pipeline.execution_settings.CeleryConfig` for why) and the worker that listens on them
(``mmm-pipeline celery-worker``, :func:`start_celery_worker`).
"""

from __future__ import annotations

import os
import pickle
import uuid

import dagster as dg
import dask.distributed
from celery.backends.filesystem import FilesystemBackend
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import raise_execution_interrupts
from dagster._core.events import DagsterEventType
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.instance import DagsterInstance
from dagster._utils import iterate_with_context
from dagster_celery import celery_executor
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements, query_on_dask_worker

from ..config import ProjectConfig

#: Where the model job is rebuilt from a config file's path (in worker processes).
JOB_RECONSTRUCTOR = ("mmm_pipeline.definitions", "model_job")


def with_ready_outputs(arguments: tuple) -> tuple:
    """The step's arguments with the run's recorded outputs added to its known state (see above)."""
    recon_job, run, run_config, step_keys, instance_ref, known_state = arguments
    with DagsterInstance.from_ref(instance_ref) as instance:
        ready = {
            entry.dagster_event.step_output_data.step_output_handle
            for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_OUTPUT)
        }
    state = known_state or KnownExecutionState()
    state = state._replace(ready_outputs={*(state.ready_outputs or ()), *ready})
    return recon_job, run, run_config, step_keys, instance_ref, state


def run_step_on_worker(dependencies: object, packed: bytes, pool: str | None) -> bytes:
    """dagster-dask's worker function on the unpickled step arguments (the job, the run, its config,
    the step key, the instance, the known state), inside the cluster-wide lock of the step's pool if it
    has one; returns the step's events pickled (dask cannot size Dagster records either, and warns).
    ``dependencies`` (the upstream steps' futures) only orders the tasks.

    A step waiting for the lock keeps the worker's thread: it must not leave the thread pool
    (``secede``) so the worker can take another step meanwhile. Two Dagster steps in threads of one
    process deadlock: each step's setup reconfigures Python logging (``logging.config.dictConfig``, from
    the instance's ``dagster.yaml``), which takes logging's module lock and then every handler's lock,
    while the other step's thread holds a handler's lock (emitting an event) and waits for the module
    lock. Seen here with the secede variant: 8 markets on 2 workers, both workers idle for good after
    4 minutes. Writer steps are short (a few seconds of DuckDB writes), so the wait costs little. The
    job's definition (rebuilt when the worker's previous step was of a run with another selection) is
    loaded before the lock, not in it.
    """
    arguments = with_ready_outputs(pickle.loads(packed))
    if pool is None:
        return pickle.dumps(list(query_on_dask_worker(dependencies, *arguments)))
    recon_job, run = arguments[0], arguments[1]
    recon_job.get_subset(op_selection=run.resolved_op_selection).get_definition()  # cached per process
    with dask.distributed.Lock(f"dagster-pool/{pool}"):
        return pickle.dumps(list(query_on_dask_worker(dependencies, *arguments)))


class PooledDaskExecutor(DaskExecutor):
    """dagster-dask's executor on an existing scheduler, with task names unique per run and pools kept
    (see the module docstring)."""

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan):  # noqa: ANN201
        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError("dask execution requires a persistent Dagster instance")
        run = plan_context.dagster_run
        instance_ref = plan_context.instance.get_ref()
        with dask.distributed.Client(self.cluster_configuration["address"]) as client:
            futures: dict[str, dask.distributed.Future] = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    dependencies = [
                        futures[key] for step_input in step.step_inputs for key in step_input.dependency_keys
                    ]
                    arguments = (
                        plan_context.reconstructable_job,
                        run,
                        plan_context.run_config,
                        [step.key],
                        instance_ref,
                        execution_plan.known_state,
                    )
                    futures[step.key] = client.submit(
                        run_step_on_worker,
                        dependencies,
                        pickle.dumps(arguments),
                        step.pool,
                        key=f"{plan_context.job_name}.{run.run_id}.{step.key}",
                        resources=get_dask_resource_requirements(step.tags),
                    )
            done = dask.distributed.as_completed(list(futures.values()), with_results=True)
            for _future, events in iterate_with_context(raise_execution_interrupts, done):
                yield from pickle.loads(events)


@dg.executor(
    name="dask",
    requirements=dg.multiple_process_executor_requirements(),
    config_schema={"address": dg.Field(str, description="the dask scheduler, tcp://HOST:8786")},
)
def pooled_dask_executor(init_context: dg.InitExecutorContext) -> PooledDaskExecutor:
    """Steps as tasks on the dask.distributed cluster at ``address`` (:class:`PooledDaskExecutor`)."""
    return PooledDaskExecutor("existing", {"address": init_context.executor_config["address"]})


class AtomicFileBackend(FilesystemBackend):
    """Celery's ``file://`` result backend, each result written to a temporary file and renamed into
    place. Celery's own writes the result file in place, and an orchestrator that polls for it can read
    it half-written: seen in the slow celery test, a 417 KB step result read as ``Unterminated string``
    (kombu ``DecodeError``), and the market's run failed."""

    def set(self, key: bytes, value: bytes | str) -> None:
        target = self._filename(key)
        partial = target + f".partial-{uuid.uuid4().hex}".encode()
        with self.open(partial, "wb") as out:
            out.write(value.encode() if isinstance(value, str) else value)
        os.replace(partial, target)


#: The default result backend's class, as Celery resolves a backend URL's ``<class>+`` prefix.
ATOMIC_FILE_BACKEND = f"{__name__}:{AtomicFileBackend.__name__}"


def celery_executor_config(cfg: ProjectConfig) -> dict[str, object]:
    """dagster-celery's executor config for this project (broker, result backend, Celery settings), the
    same for the orchestrators that submit steps and the workers that take them; creates the default
    filesystem broker's and result backend's folders (kombu and Celery expect them to exist)."""
    settings, folder = cfg.execution.celery, cfg.celery_folder
    broker = settings.broker or "filesystem://"
    # Without a result backend a submitted step could not report back; the default file backend keeps
    # one file per step (its events), written whole before it appears (AtomicFileBackend).
    backend = settings.backend or f"{ATOMIC_FILE_BACKEND}+file://{folder / 'results'}"
    config_source: dict[str, object] = {"broker_connection_retry_on_startup": True}
    if broker.startswith("filesystem://"):
        messages, control, processed = folder / "messages", folder / "control", folder / "processed"
        # A worker claims a message by renaming it into ``processed``: atomic only within one filesystem,
        # so the processed messages are kept there (kombu would move them to /tmp, maybe another one).
        config_source["broker_transport_options"] = {
            "data_folder_in": str(messages),
            "data_folder_out": str(messages),
            "control_folder": str(control),
            "processed_folder": str(processed),
            "store_processed": True,
        }
        for path in (messages, control, processed):
            path.mkdir(parents=True, exist_ok=True)
    if settings.backend is None:
        (folder / "results").mkdir(parents=True, exist_ok=True)
    return {"broker": broker, "backend": backend, "config_source": config_source}


def start_celery_worker(cfg: ProjectConfig, concurrency: int, name: str | None) -> None:
    """Run a Celery worker on the project's broker until stopped (``mmm-pipeline celery-worker``).

    It is dagster-celery's own app and step task (what ``dagster-celery worker start`` runs), built from
    the project's config instead of a second YAML file that would have to agree with it. Its pool
    processes (``concurrency``; default one, as a fit samples on the cores it has) live across tasks, so
    each compiles a model graph once and reuses it for later markets of the same shape.
    """
    app = make_app(CeleryExecutor.for_cli(**celery_executor_config(cfg)).app_args())
    create_task(app)
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--prefetch-multiplier=1"]
    app.worker_main([*argv, *(["--hostname", name] if name else [])])


def model_executor(cfg: ProjectConfig) -> dg.ExecutorDefinition:
    """The model job's executor: dask or celery when configured, else the multiprocess executor (UI and
    daemon runs; the CLI's ``in_process`` runs execute steps in its own process whatever the job's
    executor)."""
    execution = cfg.execution
    if execution.executor == "dask":
        return pooled_dask_executor.configured({"address": execution.dask.scheduler_address})
    if execution.executor == "celery":
        return celery_executor.configured(celery_executor_config(cfg))
    return dg.multiprocess_executor.configured({"max_concurrent": cfg.cv.max_parallel_folds})


def reconstructable_model_job(cfg: ProjectConfig) -> ReconstructableJob:
    """The model job as a pointer any process with this package and the config file can rebuild."""
    if cfg.source is None:
        raise dg.DagsterInvariantViolationError(
            f"execution.executor {cfg.execution.executor!r} rebuilds the job in other processes from the "
            "config file: load the config with load_config(path)"
        )
    module, function = JOB_RECONSTRUCTOR
    return dg.build_reconstructable_job(module, function, reconstructable_args=(str(cfg.source),))
