"""Entry point of the code location: ``defs`` is what Dagster loads."""

from dagster import Definitions

from .assets import build_asset_checks, build_assets
from .automation import build_automation_sensors, with_retrain_automation
from .core.config.pipeline import PipelineConfig, load_config
from .executors import executor_from_env
from .jobs import build_jobs
from .resources import default_resources
from .schedules import build_schedules
from .sensors import build_seed_file_sensors


def build_definitions(config: PipelineConfig, resources: dict | None = None) -> Definitions:
    """The whole deployment of ``config``: assets with their automation, jobs, schedules, sensors."""
    return Definitions(
        assets=with_retrain_automation(build_assets(config), config),
        asset_checks=build_asset_checks(config),
        jobs=build_jobs(config),
        schedules=build_schedules(config),
        sensors=[*build_seed_file_sensors(config), *build_automation_sensors(config)],
        resources=resources if resources is not None else default_resources(),
        executor=executor_from_env(),
    )


config = load_config()
defs = build_definitions(config)
