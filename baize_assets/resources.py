"""Dagster resources: where outputs go, the teacher endpoint, and the Pipes client that runs training.

An adapter whose ``training.launcher.kind`` is ``pipes_client`` trains through the resource
its ``launcher.resource`` names (``training_pipes_client`` by default), which the deployment
adds to its definitions (``deploy/k8s/training_pipes_client.py`` for Kubernetes).
"""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from dagster_openai import OpenAIResource
from pydantic import Field

from .core.config.pipeline import output_dir
from .core.storage import Layout
from .pipes_messages import subprocess_client

# The Pipes client of the launchers that start training on the step's machine (subprocess, torchrun).
PIPES_SUBPROCESS_CLIENT = "pipes_subprocess_client"


class BaizeStorage(ConfigurableResource):
    """Root of every generated file (``BAIZE_OUTPUT_DIR`` by default): a folder or an object store URL."""

    output_dir: str = Field(description="Folder or fsspec URL (s3://bucket/prefix) that holds seed tables, "
                                        "transcripts, corpus and adapters.")
    state_dir: str | None = Field(default=None, description="Local folder of the caches, leases and checkpoints; "
                                                            "None: the output folder, or BAIZE_STATE_DIR for a URL.")

    @property
    def layout(self) -> Layout:
        return Layout(self.output_dir, self.state_dir)


def default_resources() -> dict:
    """Resources of the deployed definitions.

    The teacher is dagster-openai's resource, so it is configured the way Dagster users
    know. Its ``base_url`` stays unset here: the ``openai`` client then reads
    ``OPENAI_BASE_URL`` itself, and falls back to OpenAI when it is unset.
    """
    return {
        "storage": BaizeStorage(output_dir=str(output_dir())),
        "openai": OpenAIResource(api_key=EnvVar("OPENAI_API_KEY")),
        # Runs adapter training in a child process (or a torchrun) that reports back to the step (dagster-pipes).
        PIPES_SUBPROCESS_CLIENT: subprocess_client(),
    }
