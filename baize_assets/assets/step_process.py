"""The step's own process, and tying it to the run's.

A run killed with SIGKILL runs no cleanup, and under the multiprocess executor each step
is a process of its own, a child of the run's process, that Dagster leaves running when
that process dies. A step that spends money (teacher calls) or writes shared state
(checkpoints) ties itself to the run's process, so it dies with it and the rerun is the
only process doing that work.
"""

import multiprocessing
import os

from dagster import AssetExecutionContext, DagsterEventType

from ..core.parent_death import die_with_parent


def runs_in_a_step_worker(context: AssetExecutionContext) -> bool:
    """Whether this step has a process of its own, started for it by the run's process.

    The multiprocess executor records the pid of each step worker it starts; a step that
    runs in the run's own process (the in-process executor) finds no such record.
    """
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=DagsterEventType.STEP_WORKER_STARTED
    ).records
    return any(record.event_log_entry.dagster_event.pid == os.getpid() for record in records)


def die_with_the_run_process(context: AssetExecutionContext) -> None:
    """In a step worker of the multiprocess executor, die when the run's process dies."""
    run_process = multiprocessing.parent_process()
    if run_process is not None and runs_in_a_step_worker(context):
        die_with_parent(run_process.pid)
