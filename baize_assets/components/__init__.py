"""Dagster Component types of Baize, found by ``dg`` through the package's registry entry point."""

from .baize_pipeline import BaizePipeline as BaizePipeline
