"""Seed-file sensors, the refresh schedule and the retrain automation, with Dagster's test helpers."""

from datetime import datetime, timezone

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetRecordsFilter,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    StaticPartitionsDefinition,
    asset_check,
    build_schedule_context,
    build_sensor_context,
    evaluate_automation_conditions,
    materialize,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME
from dagster._core.utils import make_new_run_id

from baize_assets.assets import (
    TINY_BASE_KEY,
    adapter_key,
    conversations_key,
    seed_key,
    training_set_key,
    transcripts_key,
)
from baize_assets.automation import RETRAIN_SENSOR
from baize_assets.core.config.pipeline import ConfigError, load_config
from baize_assets.core.seeds import table as seeds
from baize_assets.definitions import build_definitions
from baize_assets.schedules import corpus_refresh_schedule_name
from baize_assets.sensors import seed_sensor_name

from .ops_support import faq_config, report_materialization, resources_for, write_faq_csv

QUESTIONS = [f"How does topic number {i} work in practice?" for i in range(24)]


def ids_per_shard(config) -> dict[int, set[str]]:
    table = seeds.load_seed_table(config.sources[0]).seeds
    return {int(k): set(g["seed_id"]) for k, g in table.groupby("shard")}


def changed_shards(before: dict[int, set[str]], after: dict[int, set[str]]) -> set[str]:
    return {str(s) for s in range(4) if before.get(s, set()) != after.get(s, set())}


def requested(tick) -> set[tuple[str, str | None]]:
    """(asset, partition) of every run the tick requests; one partition per run."""
    return {(key.to_user_string(), r.partition_key) for r in tick.run_requests for key in r.asset_selection}


def tick_of(defs, name, instance, cursor=None):
    sensor = defs.resolve_sensor_def(name)
    with build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def refresh_seed_table(defs, instance) -> None:
    """What the seed table run the sensor requests does."""
    assert materialize([defs.resolve_assets_def(seed_key("faq"))], instance=instance).success


SEED_TABLE_ONLY = {("faq/seed_questions", None)}


def corpus_of(shards) -> set[tuple[str, str]]:
    return {(f"faq/{step}", s) for step in ("transcripts", "conversations") for s in shards}


def test_seed_file_change_requests_the_seed_table_and_exactly_the_changed_shards(tmp_path, monkeypatch):
    csv = write_faq_csv(tmp_path / "faq.csv", QUESTIONS)
    config = faq_config(csv)
    defs = build_definitions(config, resources_for(tmp_path / "out"))
    sensor = seed_sensor_name("faq")
    load_seed_table = seeds.load_seed_table

    def parsed_in_the_tick(*args, **kwargs):
        raise AssertionError("a sensor tick parsed the seed files")

    with DagsterInstance.ephemeral() as instance:
        # First tick, nothing materialized yet: the seed table first, parsed in its run.
        monkeypatch.setattr(seeds, "load_seed_table", parsed_in_the_tick)
        first = tick_of(defs, sensor, instance)
        assert requested(first) == SEED_TABLE_ONLY
        assert first.run_requests[0].tags["baize/trigger"] == sensor

        unchanged = tick_of(defs, sensor, instance, first.cursor)
        assert not unchanged.run_requests and "unchanged" in unchanged.skip_message

        # Once the seed table is materialized, every shard is new: one run per shard.
        monkeypatch.setattr(seeds, "load_seed_table", load_seed_table)
        refresh_seed_table(defs, instance)
        monkeypatch.setattr(seeds, "load_seed_table", parsed_in_the_tick)
        every_shard = tick_of(defs, sensor, instance, first.cursor)
        assert requested(every_shard) == corpus_of(["0", "1", "2", "3"])
        assert sorted(r.partition_key for r in every_shard.run_requests) == ["0", "1", "2", "3"]
        assert {r.tags["baize/trigger"] for r in every_shard.run_requests} == {sensor}
        monkeypatch.setattr(seeds, "load_seed_table", load_seed_table)

        # One seed added, one removed: the seed table, then only their shards.
        before = ids_per_shard(config)
        write_faq_csv(csv, QUESTIONS[1:] + ["What is an entirely new question about tides?"])
        changed = changed_shards(before, ids_per_shard(config))
        assert 1 <= len(changed) <= 2
        edited = tick_of(defs, sensor, instance, every_shard.cursor)
        assert requested(edited) == SEED_TABLE_ONLY
        refresh_seed_table(defs, instance)
        second = tick_of(defs, sensor, instance, edited.cursor)
        assert requested(second) == corpus_of(changed)

        # Rewriting the same seeds (new modification time, same content) requests nothing.
        write_faq_csv(csv, QUESTIONS[1:] + ["What is an entirely new question about tides?"])
        rewritten = tick_of(defs, sensor, instance, second.cursor)
        assert not rewritten.run_requests and "unchanged" in rewritten.skip_message

        # A seed table rebuilt from the same seeds (a manual refresh) reruns no shard.
        refresh_seed_table(defs, instance)
        rebuilt = tick_of(defs, sensor, instance, rewritten.cursor)
        assert not rebuilt.run_requests and "no shard's seeds changed" in rebuilt.skip_message


def test_first_tick_compares_with_the_materialized_seed_table(tmp_path):
    csv = write_faq_csv(tmp_path / "faq.csv", QUESTIONS)
    config = faq_config(csv)
    defs = build_definitions(config, resources_for(tmp_path / "out"))
    sensor = seed_sensor_name("faq")
    with DagsterInstance.ephemeral() as instance:
        refresh_seed_table(defs, instance)
        current = tick_of(defs, sensor, instance)
        assert not current.run_requests and "unchanged" in current.skip_message

        before = ids_per_shard(config)
        write_faq_csv(csv, QUESTIONS + ["Why is the sky blue at noon?"])
        (new_shard,) = changed_shards(before, ids_per_shard(config))
        edited = tick_of(defs, sensor, instance, current.cursor)
        assert requested(edited) == SEED_TABLE_ONLY
        refresh_seed_table(defs, instance)
        assert requested(tick_of(defs, sensor, instance, edited.cursor)) == corpus_of([new_shard])


def test_refresh_schedule_uses_the_configured_cron_and_requests_every_shard(tmp_path):
    config = faq_config(write_faq_csv(tmp_path / "faq.csv", QUESTIONS), refresh_cron="15 2 * * 1")
    defs = build_definitions(config, resources_for(tmp_path / "out"))
    schedule = defs.resolve_schedule_def(corpus_refresh_schedule_name("faq"))
    assert schedule.cron_schedule == "15 2 * * 1"
    when = datetime(2026, 1, 5, 2, 15, tzinfo=timezone.utc)
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        )
        data = schedule.evaluate_tick(context)
    assert sorted(r.partition_key for r in data.run_requests) == ["0", "1", "2", "3"]
    assert {r.job_name or schedule.job_name for r in data.run_requests} == {"faq_corpus"}


def test_a_bad_cron_fails_with_the_key_path(tmp_path):
    path = tmp_path / "baize.yaml"
    path.write_text(
        "sources: [{name: faq, format: text, paths: [x.txt]}]\nautomation: {refresh_cron: 'every monday'}\n"
    )
    with pytest.raises(ConfigError, match="automation.refresh_cron"):
        load_config(path)


@asset_check(asset=conversations_key("faq"), blocking=True, partitions_def=StaticPartitionsDefinition(["0", "1"]))
def corpus_gate():
    """Stand-in for the corpus's blocking checks: its results are reported in the tests."""
    return AssetCheckResult(passed=True)


def automation_defs(tmp_path, **automation) -> Definitions:
    config = faq_config(write_faq_csv(tmp_path / "faq.csv", QUESTIONS), shards=2, **automation)
    built = build_definitions(config, resources_for(tmp_path / "out"))
    return Definitions.merge(built, Definitions(asset_checks=[corpus_gate]))


def everything_materialized(instance) -> None:
    report_materialization(instance, seed_key("faq"))
    for shard in ("0", "1"):
        report_materialization(instance, transcripts_key("faq"), shard)
        report_materialization(instance, conversations_key("faq"), shard)
        report_gate(instance, shard, passed=True)
    for key in (TINY_BASE_KEY, training_set_key("faq_bot"), adapter_key("faq_bot")):
        report_materialization(instance, key)


def report_gate(instance, shard: str, passed: bool) -> None:
    # As a corpus run records it: under its own run id, pointing at the shard's latest materialization.
    (latest,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=conversations_key("faq"), asset_partitions=[shard]), limit=1
    ).records
    evaluation = AssetCheckEvaluation(
        asset_key=conversations_key("faq"),
        check_name="corpus_gate",
        passed=passed,
        blocking=True,
        partition=shard,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
        ),
    )
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
        event_specific_data=evaluation,
        job_name=RUNLESS_JOB_NAME,
    )
    instance.report_dagster_event(event, run_id=make_new_run_id())


def requested_keys(result) -> set[str]:
    return {key.to_user_string() for key in (training_set_key("faq_bot"), adapter_key("faq_bot"), TINY_BASE_KEY)
            if result.get_num_requested(key)} | {
        f"{key.to_user_string()}[{p}]" for key in (transcripts_key("faq"), conversations_key("faq"))
        for p in result.get_requested_partitions(key)
    }


def test_a_changed_corpus_shard_retrains_training_set_and_adapter_only(tmp_path):
    defs = automation_defs(tmp_path)
    assert defs.resolve_sensor_def(RETRAIN_SENSOR) is not None
    with DagsterInstance.ephemeral() as instance:
        everything_materialized(instance)
        settled = evaluate_automation_conditions(defs, instance)
        assert settled.total_requested == 0

        # The shard rewritten with the same content (a refresh from the cache): nothing to train.
        report_materialization(instance, conversations_key("faq"), "1")
        report_gate(instance, "1", passed=True)
        unchanged = evaluate_automation_conditions(defs, instance, cursor=settled.cursor)
        assert unchanged.total_requested == 0

        report_materialization(instance, conversations_key("faq"), "1", data_version="2")
        report_gate(instance, "1", passed=True)
        result = evaluate_automation_conditions(defs, instance, cursor=unchanged.cursor)
        assert requested_keys(result) == {"faq_bot/training_set", "faq_bot/adapter"}

        again = evaluate_automation_conditions(defs, instance, cursor=result.cursor)
        assert again.total_requested == 0


def test_a_failed_blocking_check_keeps_the_corpus_from_training(tmp_path):
    defs = automation_defs(tmp_path)
    with DagsterInstance.ephemeral() as instance:
        everything_materialized(instance)
        settled = evaluate_automation_conditions(defs, instance)

        report_materialization(instance, conversations_key("faq"), "0", data_version="2")
        report_gate(instance, "0", passed=False)
        blocked = evaluate_automation_conditions(defs, instance, cursor=settled.cursor)
        assert blocked.total_requested == 0

        # The shard is fixed and passes: training follows.
        report_materialization(instance, conversations_key("faq"), "0", data_version="3")
        report_gate(instance, "0", passed=True)
        fixed = evaluate_automation_conditions(defs, instance, cursor=blocked.cursor)
        assert requested_keys(fixed) == {"faq_bot/training_set", "faq_bot/adapter"}


def test_retrain_automation_can_be_switched_off(tmp_path):
    defs = automation_defs(tmp_path, retrain_on_corpus_change=False)
    assert RETRAIN_SENSOR not in {s.name for s in defs.sensors}
    graph = defs.resolve_asset_graph()
    assert graph.get(training_set_key("faq_bot")).automation_condition is None
    assert graph.get(adapter_key("faq_bot")).automation_condition is None
    with DagsterInstance.ephemeral() as instance:
        everything_materialized(instance)
        report_materialization(instance, conversations_key("faq"), "1", data_version="2")
        assert evaluate_automation_conditions(defs, instance).total_requested == 0


def test_the_project_definitions_wire_pools_automation_sensors_and_schedules():
    from baize_assets.definitions import defs

    config = load_config()
    graph = defs.resolve_asset_graph()
    pools = {key.to_user_string(): defs.resolve_assets_def(key).op.pool for key in graph.get_all_asset_keys()}
    judged = {
        f"{plan.adapter_name}/{source}_scores"
        for plan in config.self_distillation for source in config.adapter(plan.adapter).sources
    }
    assert {k for k, pool in pools.items() if pool == "teacher_api"} == {
        f"{s.name}/transcripts" for s in config.sources if s.is_self_chat
    } | judged
    adapters = [a.name for a in config.adapters] + [p.adapter_name for p in config.self_distillation]
    samples = {f"{plan.adapter_name}/{source}_samples"
               for plan in config.self_distillation for source in config.adapter(plan.adapter).sources}
    # Every step that loads a model, and only those, shares the accelerator.
    assert {k for k, pool in pools.items() if pool == "gpu"} == {
        f"{name}/{stage}" for name in adapters for stage in ("adapter", "evaluation")} | samples | {
        "base_models/tiny_llama"}
    automated = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).automation_condition}
    assert {f"{a.name}/{stage}" for a in config.adapters for stage in ("training_set", "adapter")} <= automated
    # Seeds, transcripts and corpus shards only run when a sensor, schedule or person asks.
    assert not {k for k in automated if k.split("/")[1] in ("seed_questions", "transcripts", "conversations")}
    assert {s.name for s in defs.sensors} == {seed_sensor_name(s.name) for s in config.sources} | {RETRAIN_SENSOR}


@pytest.mark.slow
def test_an_unchanged_refresh_trains_nothing_and_a_changed_shard_retrains_once(tmp_path, monkeypatch):
    from dagster import instance_for_test

    from baize_assets.assets import evaluation_key
    from baize_assets.jobs import SEED_TABLES_JOB, corpus_job_name
    from baize_assets.teacher.server import SimulatedTeacher

    csv = write_faq_csv(tmp_path / "faq.csv", QUESTIONS)
    config = faq_config(csv, shards=2)
    defs = build_definitions(config, resources_for(tmp_path / "out"))
    retrained = (training_set_key("faq_bot"), adapter_key("faq_bot"), evaluation_key("faq_bot"))

    def run(job: str, partition: str | None = None) -> None:
        assert defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition).success

    def requested(result) -> set[str]:
        return {key.to_user_string() for key in retrained if result.get_num_requested(key)}

    with SimulatedTeacher() as teacher, instance_for_test(temp_dir=str(tmp_path)) as instance:
        monkeypatch.setenv("OPENAI_BASE_URL", teacher.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-refresh")
        run(SEED_TABLES_JOB)
        for shard in ("0", "1"):
            run(corpus_job_name("faq"), shard)
        for key in (TINY_BASE_KEY, *retrained):  # trained once already: nothing is missing
            report_materialization(instance, key)
        settled = evaluate_automation_conditions(defs, instance)
        assert settled.total_requested == 0
        calls = teacher.stats()["requests_by_path"]["/v1/chat/completions"]

        # The weekly refresh: every shard rewritten from the cache, the same conversations.
        for shard in ("0", "1"):
            run(corpus_job_name("faq"), shard)
        refreshed = evaluate_automation_conditions(defs, instance, cursor=settled.cursor)
        assert refreshed.total_requested == 0
        assert teacher.stats()["requests_by_path"]["/v1/chat/completions"] == calls  # and no teacher call

        # A new seed changes one shard: what depends on it is requested, once.
        before = ids_per_shard(config)
        write_faq_csv(csv, [*QUESTIONS, "How does a brand new topic work in practice?"])
        run(SEED_TABLES_JOB)
        (shard,) = changed_shards(before, ids_per_shard(config))
        run(corpus_job_name("faq"), shard)
        changed = evaluate_automation_conditions(defs, instance, cursor=refreshed.cursor)
        assert requested(changed) == {"faq_bot/training_set", "faq_bot/adapter", "faq_bot/evaluation"}
        assert evaluate_automation_conditions(defs, instance, cursor=changed.cursor).total_requested == 0
