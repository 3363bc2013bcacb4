"""Entry point of the code location: ``defs`` is what Dagster loads."""

from dagster import Definitions

from .assets import build_assets
from .core.config import load_config
from .jobs import build_jobs
from .resources import default_resources

config = load_config()
defs = Definitions(
    assets=build_assets(config),
    jobs=build_jobs(config),
    resources=default_resources(),
)
