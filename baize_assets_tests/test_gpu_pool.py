"""Steps that load a model share the accelerator: two runs started at once in one instance take turns."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from dagster import DagsterEventType, DagsterInstance
from dagster_openai import OpenAIResource

from baize_assets.assets import seed_key
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

from .pool_support import pool_config

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _step_window(instance: DagsterInstance, run_id: str) -> tuple[float, float]:
    times = {entry.dagster_event.event_type: entry.timestamp for entry in instance.all_logs(run_id)
             if entry.dagster_event and entry.dagster_event.event_type in (DagsterEventType.STEP_START,
                                                                           DagsterEventType.STEP_SUCCESS)}
    return times[DagsterEventType.STEP_START], times[DagsterEventType.STEP_SUCCESS]


@pytest.mark.slow
def test_two_runs_that_load_a_model_at_once_are_serialised_by_the_gpu_pool(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # The project's own instance settings: pools at one step at a time unless raised.
    (home / "dagster.yaml").write_text((open(os.path.join(PROJECT, "dagster.yaml")).read())
                                       .replace(".dagster/", f"{home}/.dagster/"))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    output = str(tmp_path / "out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        defs = build_definitions(pool_config(), resources={
            "storage": BaizeStorage(output_dir=output), "pipes_subprocess_client": subprocess_client(),
            "openai": OpenAIResource(api_key="sk-not-used")})
        with DagsterInstance.get() as instance:
            seeds = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[seed_key(s.name) for s in pool_config().sources])
            assert seeds.success
            runs = [subprocess.Popen([sys.executable, "-m", "baize_assets_tests.pool_support", output], cwd=PROJECT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(2)]
            outputs = [run.communicate(timeout=300) for run in runs]
            assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
            run_ids = [out.strip().splitlines()[-1] for out, _ in outputs]
            (first_start, first_end), (second_start, second_end) = sorted(_step_window(instance, r) for r in run_ids)
            blocked = [entry for run_id in run_ids for entry in instance.all_logs(run_id)
                       if "blocked by limit for pool gpu" in (entry.message or "")]
    assert first_end <= second_start  # one after the other, never both models at once
    assert blocked  # the second waited for the pool, not by chance
