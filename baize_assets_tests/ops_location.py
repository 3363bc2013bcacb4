"""Code location of the operations tests: the project's definitions on ``ops_baize.yaml``.

Loaded by module name (``-m baize_assets_tests.ops_location``) by the webserver, the
daemon, Celery workers and reconstructable runs, so every process builds the same graph.
Outputs go to ``BAIZE_OUTPUT_DIR``; the executor follows ``BAIZE_EXECUTOR``.
"""

from pathlib import Path

from baize_assets.core.config.pipeline import load_config
from baize_assets.definitions import build_definitions

CONFIG_PATH = Path(__file__).with_name("ops_baize.yaml")
config = load_config(CONFIG_PATH)
defs = build_definitions(config)
