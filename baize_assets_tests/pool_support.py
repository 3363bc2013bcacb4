"""A run of the tiny base model's asset in its own process, as a second launcher would start one.

``python -m baize_assets_tests.pool_support OUTPUT_DIR`` materializes ``base_models/tiny_llama``
(a model built and pretrained a few steps) in the instance of ``DAGSTER_HOME``, printing its run id.
"""

from __future__ import annotations

import sys

from dagster import DagsterInstance
from dagster_openai import OpenAIResource

from baize_assets.assets import TINY_BASE_KEY
from baize_assets.components.baize_pipeline import build_definitions
from baize_assets.core.config.pipeline import PipelineConfig
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

from .conftest import fast_config


def pool_config() -> PipelineConfig:
    """The shipped configuration with a tiny base pretrained just long enough to be a real step."""
    config = fast_config()
    return config.model_copy(update={"tiny_base": config.tiny_base.model_copy(update={"pretrain_steps": 40})})


def main(output_dir: str) -> int:
    defs = build_definitions(pool_config(), resources={
        "storage": BaizeStorage(output_dir=output_dir), "pipes_subprocess_client": subprocess_client(),
        "openai": OpenAIResource(api_key="sk-not-used")})
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=DagsterInstance.get(), asset_selection=[TINY_BASE_KEY])
    print(result.run_id, flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
