"""The pipeline as a Dagster Component: a ``defs.yaml`` whose attributes are its configuration.

The attributes are either ``config_file`` (a YAML file of the configuration, relative to the
dg project) or the configuration itself (``sources``, ``adapters``, ``teacher``, ``corpus``, ...),
validated by the same ``PipelineConfig`` as ``baize.yaml``.
"""

from pathlib import Path
from typing import Any

from dagster import Component, ComponentLoadContext, Definitions, Scaffolder, ScaffoldRequest, scaffold_with
from pydantic import Field, model_validator

from ..assets import build_asset_checks, build_assets
from ..automation import build_automation_sensors, with_retrain_automation
from ..core.config.pipeline import PipelineConfig, SourceConfig, load_config
from ..executors import executor_from_env
from ..jobs import build_jobs
from ..resources import default_resources
from ..schedules import build_schedules
from ..sensors import build_seed_file_sensors

# What `dg scaffold defs` writes: one self-chat source and one adapter, to edit in place.
SCAFFOLD_TEMPLATE = """\
type: {type_name}
attributes:
  # The pipeline's configuration: the keys of Baize's baize.yaml (sources, adapters,
  # teacher, corpus, ...), or `config_file: <a YAML file of them, relative to this project>`.
  # Relative seed paths start at the Baize project's root; give absolute paths for your own.
  sources:
    - name: questions
      format: text
      paths: [/path/to/questions.txt]
      shards: 4
  adapters:
    - name: baize_questions
      sources: [questions]
"""


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


class BaizePipelineScaffolder(Scaffolder):
    def scaffold(self, request: ScaffoldRequest) -> None:
        request.target_path.mkdir(parents=True, exist_ok=True)
        defs_yaml = request.target_path / "defs.yaml"
        defs_yaml.write_text(SCAFFOLD_TEMPLATE.format(type_name=request.type_name), encoding="utf-8")


class BaizePipelineAttributes(PipelineConfig):
    """PipelineConfig's own keys, or ``config_file`` alone naming a file of them."""

    config_file: str | None = None
    # Required unless config_file is given (checked below), so not required by the schema.
    sources: list[SourceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _file_or_inline(self) -> "BaizePipelineAttributes":
        inline = sorted(self.model_fields_set - {"config_file"})
        if self.config_file is not None and inline:
            raise ValueError(
                f"config_file holds the whole configuration: move {', '.join(inline)} into it or drop config_file"
            )
        if self.config_file is None and not self.sources:
            raise ValueError("give the configuration inline (at least sources) or name its file in config_file")
        return self

    def pipeline_config(self, project_root: Path) -> PipelineConfig:
        if self.config_file is not None:
            return load_config(project_root / self.config_file)
        # Nested models are already validated; this runs PipelineConfig's own checks on the whole.
        return PipelineConfig.model_validate({name: getattr(self, name) for name in PipelineConfig.model_fields})


@scaffold_with(BaizePipelineScaffolder)
class BaizePipeline(Component):
    """A Baize pipeline (self-chat corpus, LoRA adapters, evaluation) from its configuration.

    ``config_file`` may use the component templates, e.g. ``{{ env('BAIZE_CONFIG', 'baize.yaml') }}``.
    """

    def __init__(self, config: PipelineConfig):
        self.config = config

    @classmethod
    def get_model_cls(cls) -> type[BaizePipelineAttributes]:
        return BaizePipelineAttributes

    @classmethod
    def load(cls, attributes: Any, context: ComponentLoadContext) -> "BaizePipeline":
        if not isinstance(attributes, BaizePipelineAttributes):
            raise ValueError("a BaizePipeline needs attributes: config_file, or the configuration inline")
        if attributes.config_file is not None:
            rendered = context.resolution_context.at_path("attributes").at_path("config_file")
            attributes = attributes.model_copy(update={"config_file": rendered.resolve_value(attributes.config_file)})
        return cls(attributes.pipeline_config(context.project_root))

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        return build_definitions(self.config)
