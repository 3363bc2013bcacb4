"""Declarative automation: training sets and adapters follow their corpus's data.

Applied here, in the definitions wiring, with ``map_asset_specs``, so the asset modules
stay free of deployment policy and a config switch turns it off.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

from .assets import adapter_stage_keys
from .core.config.pipeline import PipelineConfig

RETRAIN_SENSOR = "retrain_on_corpus_change"

# Eager in shape (run when newly missing, never while an upstream is missing or in progress),
# but on an upstream's new *data*, not its new materialization: every asset reports a data
# version of its content, so a refresh that rewrites every shard from the cache keeps their
# versions and trains nothing, while a shard whose conversations changed retrains what
# depends on it once. The blocking-check clause keeps training away while any shard of any
# upstream has a failed blocking check (a bad corpus shard never reaches training), also
# when that shard came from a run that did not target the training set.
# ``all_deps_blocking_checks_passed`` would not do: for an unpartitioned training set it is
# satisfied by any one passing shard.
NO_UPSTREAM_BLOCKING_CHECK_FAILED = ~AutomationCondition.any_deps_match(
    AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
).with_label("no_upstream_blocking_check_failed")
UPSTREAM_DATA_CHANGED = AutomationCondition.any_deps_match(
    (AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target()).with_label(
        "data_version_changed_without_root")
    | AutomationCondition.will_be_requested()
).with_label("any_deps_data_changed")
RETRAIN_CONDITION = (
    AutomationCondition.in_latest_time_window()
    & (AutomationCondition.newly_missing() | UPSTREAM_DATA_CHANGED).since_last_handled()
    & ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
    & NO_UPSTREAM_BLOCKING_CHECK_FAILED
).with_label("retrain_after_corpus_change")


def retrained_keys(config: PipelineConfig) -> set[AssetKey]:
    """Every adapter's training set, adapter and evaluation; Baize v2 adapters follow their scores instead."""
    return {key for adapter in config.adapters for key in adapter_stage_keys(adapter.name)}


def with_retrain_automation(assets: Sequence[AssetsDefinition], config: PipelineConfig) -> list[AssetsDefinition]:
    """The assets, with ``RETRAIN_CONDITION`` on training sets and adapters when enabled."""
    if not config.automation.retrain_on_corpus_change:
        return list(assets)
    retrained = retrained_keys(config)
    return [
        asset.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=RETRAIN_CONDITION)
            if spec.key in retrained
            else spec
        )
        for asset in assets
    ]


def build_automation_sensors(config: PipelineConfig) -> list[AutomationConditionSensorDefinition]:
    """The sensor that evaluates the conditions; running by default when automation is on."""
    if not config.automation.retrain_on_corpus_change:
        return []
    return [
        AutomationConditionSensorDefinition(
            RETRAIN_SENSOR,
            target=AssetSelection.assets(*retrained_keys(config)),
            default_status=DefaultSensorStatus.RUNNING,
            description="Retrains training sets and adapters after their corpus changes.",
        )
    ]
