"""Headless runs that are runs of the code location, so the UI lists them under it.

``JobDefinition.execute_in_process`` records a run with no code-location origin: the UI's Runs page
shows it, but Overview, a job's history and the asset views filter runs by location and repository
(the ``dagster/code_location`` and ``.dagster/repository`` tags Dagster derives from the run's
``remote_job_origin``) and miss it. ``dagster job execute`` records none either. So the CLI creates its
runs as the webserver and the daemon do, naming the location they load (``mmm_pipeline.definitions``,
from ``workspace.yaml`` or ``dagster dev -m``), and then executes them in this process exactly as
``execute_in_process`` does: synchronous, the terminal shows progress, the exit code tells.

``execute_with_executor`` records runs the same way and executes them with the job's own executor
(multiprocess, dask): steps run in other processes or on other machines, which rebuild the job from a
reconstructable pointer, and the events come back to the instance.

This uses Dagster's execution internals (the same calls ``execute_in_process`` makes); they are pinned
with the dagster version in ``requirements.lock``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster import DagsterInstance
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    execute_run,
    job_execution_iterator,
)
from dagster._core.execution.context_creation_job import (
    PlanOrchestrationContextManager,
    orchestration_context_event_generator,
)
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origin_from_module_name

#: The module the code location loads (workspace.yaml, ``mmm-pipeline ui``); its name is the location's.
LOCATION_MODULE = "mmm_pipeline.definitions"


def job_origin(job_name: str, working_directory: str | None = None) -> RemoteJobOrigin:
    """The origin the webserver gives runs of ``job_name`` in the ``mmm_pipeline.definitions`` location."""
    location = location_origin_from_module_name(LOCATION_MODULE, None, working_directory or os.getcwd())
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)


def execute_in_location(
    job_def: dg.JobDefinition,
    instance: DagsterInstance,
    run_config: Mapping[str, object],
    asset_selection: Sequence[dg.AssetKey] | None = None,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Like ``job_def.execute_in_process(raise_on_error=False, ...)``, recorded as a run of the location.

    Steps run one after another in this process (the job's own executor is for UI and daemon runs).
    """
    selection = list(asset_selection or [])
    ephemeral = job_def.as_ephemeral_job(resource_defs={}, input_values={}, asset_selection=selection)
    job = InMemoryJob(ephemeral)
    run_tags = merge_run_tags(
        job_def=job_def,
        partition_key=partition_key,
        tags=tags,
        asset_selection=selection,
        instance=instance,
        run_config=run_config,
    )
    plan = create_execution_plan(job, run_config=run_config, instance_ref=instance.get_ref(), tags=run_tags)
    run = instance.create_run_for_job(
        job_def=ephemeral,
        execution_plan=plan,
        run_config=run_config,
        tags={**job_def.run_tags, **run_tags},
        asset_selection=frozenset(selection) if selection else None,
        remote_job_origin=job_origin(job_def.name),
    )
    output_capture: dict = {}
    events = list(
        ExecuteRunWithPlanIterable(
            execution_plan=plan,
            iterator=job_execution_iterator,
            execution_context_manager=PlanOrchestrationContextManager(
                context_event_generator=orchestration_context_event_generator,
                job=job,
                execution_plan=plan,
                dagster_run=run,
                instance=instance,
                run_config=run_config,
                executor_defs=None,
                output_capture=output_capture,
                raise_on_error=False,
            ),
        )
    )
    return dg.ExecuteInProcessResult(
        job_def=ephemeral,
        event_list=events,
        dagster_run=instance.get_run_by_id(run.run_id),
        output_capture=output_capture,
    )


def execute_with_executor(
    recon_job: ReconstructableJob,
    instance: DagsterInstance,
    run_config: Mapping[str, object],
    asset_selection: Sequence[dg.AssetKey] | None = None,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create a run of the location and execute it with the job's own executor; returns its run id
    once the run ended (:func:`run_result` reads it back).

    One run per process at a time: Dagster sets up each run's loggers with ``logging.config``, which
    deadlocks against another run logging from a second thread of the same process (seen here with
    four market runs in threads), so concurrent runs each need their own process, as Dagster's run
    launchers give them.
    """
    job_def = recon_job.get_definition()
    selection = list(asset_selection or [])
    run_tags = merge_run_tags(
        job_def=job_def,
        partition_key=partition_key,
        tags=tags,
        asset_selection=selection,
        instance=instance,
        run_config=run_config,
    )
    run = instance.create_run_for_job(  # subsets the job to the selection and plans it
        job_def=job_def,
        run_config=run_config,
        tags={**job_def.run_tags, **run_tags},
        asset_selection=frozenset(selection) if selection else None,
        job_code_origin=recon_job.get_python_origin(),
        remote_job_origin=job_origin(job_def.name),
    )
    execute_run(recon_job, run, instance, raise_on_error=False)
    return run.run_id


def run_result(
    job_def: dg.JobDefinition, instance: DagsterInstance, run_id: str
) -> dg.ExecuteInProcessResult:
    """A finished run as ``execute_in_location`` returns it (its events, read back from the instance),
    so callers treat runs executed here and elsewhere alike."""
    events = [entry.dagster_event for entry in instance.all_logs(run_id) if entry.is_dagster_event]
    return dg.ExecuteInProcessResult(
        job_def=job_def, event_list=events, dagster_run=instance.get_run_by_id(run_id), output_capture=None
    )
