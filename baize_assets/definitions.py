"""Entry point of the code location: ``defs`` is what Dagster loads.

The project is a dg project: ``defs`` is its defs folder (``baize_assets/defs/``), where
``baize/defs.yaml`` declares the pipeline as a ``BaizePipeline`` component on ``baize.yaml``
(or the file named by ``BAIZE_CONFIG``).
"""

from pathlib import Path

from dagster import load_from_defs_folder

from .components.baize_pipeline import build_definitions as build_definitions
from .core.config.pipeline import load_config

# The configuration the defs folder's pipeline reads, for callers that need it next to defs (the demo).
config = load_config()
defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
