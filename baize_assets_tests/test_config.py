from pathlib import Path

import pytest
import yaml
from dagster import DagsterInvalidDefinitionError, ScheduleDefinition

from baize_assets.core.config.cron import cron_problem
from baize_assets.core.config.pipeline import (
    PROJECT_ROOT,
    TINY_BASE_MODEL,
    ConfigError,
    load_config,
)
from baize_assets.core.seeds.table import load_seed_table


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "baize.yaml"
    path.write_text(text)
    return path


MINIMAL = """
sources:
  - name: finance
    format: text
    paths: [seeds.txt]
adapters:
  - name: baize_finance
    sources: [finance]
"""


# The brief's seed datasets and the reader each one's files need.
BRIEF_SOURCES = {"quora": "quora_tsv", "stackoverflow": "stackoverflow", "medquad": "medquad", "alpaca": "alpaca_json"}


def test_the_project_config_reads_seeds_from_each_briefs_dataset():
    config = load_config()
    assert {source.name: source.format for source in config.sources} == BRIEF_SOURCES
    for source in config.sources:
        paths = source.resolved_paths()
        assert all(path.exists() for path in paths), f"{source.name}: {[str(p) for p in paths if not p.exists()]}"
        table = load_seed_table(source)
        assert table.quarantine.empty, f"{source.name}: {table.quarantined_by_reason}"
        assert set(table.seeds["shard"]) == set(range(source.shards))  # every partition has seeds to chat
        # Alpaca's rows are finished answers, trained on as they are; the others' seeds are self-chatted.
        assert table.seeds["response"].notna().all() == (not source.is_self_chat) == (source.name == "alpaca")
    assert {name for adapter in config.adapters for name in adapter.sources} == set(BRIEF_SOURCES)


def test_each_project_adapter_trains_on_one_domain_it_is_named_after():
    config = load_config()
    for adapter in config.adapters:
        assert {config.source(name).domain for name in adapter.sources} == {adapter.name.removeprefix("baize_")}


@pytest.mark.parametrize("config_file", ["baize.yaml", "baize_assets_tests/ops_baize.yaml"])
def test_the_projects_own_configs_load_and_round_trip(tmp_path, config_file):
    config = load_config(PROJECT_ROOT / config_file)
    # Every setting dumps to a value the strict loader takes back unchanged (no coerced or derived keys).
    assert load_config(write(tmp_path, yaml.safe_dump(config.model_dump(mode="json")))) == config


def test_a_new_domain_needs_only_config_and_gets_baize_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    adapter = config.adapter("baize_finance")
    assert adapter.base_model == TINY_BASE_MODEL
    assert (adapter.lora.r, adapter.lora.alpha, adapter.lora.dropout) == (8, 16, 0.05)
    assert adapter.lora.target_modules == ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    assert adapter.training.learning_rate == 2e-4 and adapter.training.effective_batch_size == 64
    assert adapter.training.cutoff_len == 512 and adapter.training.loss_on == "ai"


def source_option(option: str) -> str:
    return MINIMAL.replace("format: text", f"format: text\n    {option}")


def training(settings: str) -> str:
    return MINIMAL + f"    training: {{{settings}}}\n"


def section(name: str, settings: str) -> str:
    return f"{name}: {{{settings}}}\n" + MINIMAL


BAD_CONFIGS = {
    "unknown key": (source_option("shardz: 3"), "sources.0.shardz: unknown key"),
    "unknown format": (MINIMAL.replace("format: text", "format: xlsx"), "sources.0.format"),
    "shards below one": (source_option("shards: 0"), "sources.0.shards: Input should be greater than or equal to 1"),
    "undeclared source": (MINIMAL.replace("sources: [finance]", "sources: [finanse]"), "source 'finanse', which"),
    "unknown nested key": (MINIMAL + "    lora: {r: 8, alpah: 16}\n", "adapters.0.lora.alpah: unknown key"),
    "csv without text_field": (MINIMAL.replace("format: text", "format: csv"), "needs text_field"),
    "temperature out of range": (section("teacher", "temperature: 9"), "teacher.temperature"),
    # Strict types: a bool is not a number, a float is not a count, a string is not a number.
    "bool for an int": (source_option("shards: true"), "sources.0.shards: Input should be a valid integer (got true)"),
    "float for an int": (source_option("shards: 2.0"), "sources.0.shards: Input should be a valid integer (got 2.0)"),
    "string for a number": (
        section("teacher", 'rate_limit: {requests_per_minute: "600"}'),
        'teacher.rate_limit.requests_per_minute: Input should be a valid number (got "600")',
    ),
    "string for a float": (training('epochs: "4"'), "adapters.0.training.epochs: Input should be a valid number"),
    "int for a bool": (section("judge", "enabled: 1"), "judge.enabled: Input should be a valid boolean"),
    "bool for eval_size": (training("eval_size: true"), "adapters.0.training.eval_size: must be a count"),
    "fraction eval_size of one": (training("eval_size: 1.5"), "a float eval_size is a fraction"),
    # Finite numbers only.
    "infinite timeout": (section("teacher", "timeout_s: .inf"), "teacher.timeout_s: Input should be a finite number"),
    "nan temperature": (section("teacher", "temperature: .nan"), "teacher.temperature: Input should be a finite"),
    "nan learning rate": (training("learning_rate: .nan"), "adapters.0.training.learning_rate: Input should be a"),
    "nan eval_size": (training("eval_size: .nan"), "adapters.0.training.eval_size: must be a count"),
    "infinite budget": (section("teacher", "budget: {max_dollars: .inf}"), "teacher.budget.max_dollars: Input should"),
    # Duplicate YAML keys, which PyYAML would silently resolve to the last one.
    "duplicate key": (source_option("shards: 2\n    shards: 3"), "sources.0.shards: duplicate key at line 6 (first"),
    "duplicate top-level key": (MINIMAL + "adapters: []\n", "adapters: duplicate key at line 9 (first at line 6)"),
    # Schedules.
    "cron out of range": (
        section("automation", 'refresh_cron: "61 25 * * *"'),
        "automation.refresh_cron: '61 25 * * *' is not a cron schedule: is not acceptable, out of range",
    ),
    "cron of four fields": (section("automation", 'refresh_cron: "0 3 * *"'), "needs five fields"),
    "cron on February 30": (section("automation", 'refresh_cron: "0 0 30 2 *"'), "never occurs"),
    "unknown time zone": (
        section("automation", "refresh_timezone: Mars/Olympus"),
        "automation.refresh_timezone: 'Mars/Olympus' is not an IANA time zone",
    ),
    # Ranges and orders between two settings.
    "micro batch above effective": (
        training("micro_batch_size: 128, effective_batch_size: 64"),
        "adapters.0.training: micro_batch_size (128) is larger than effective_batch_size (64)",
    ),
    "retry cap below base": (
        section("teacher", "retry_base_s: 2, retry_max_s: 1"),
        "teacher: retry_max_s (1.0) is below retry_base_s (2.0)",
    ),
    "turn length bounds swapped": (
        section("corpus", "turn_length: {min_chars: 50, max_chars: 10}"),
        "corpus.turn_length: min_chars (50) is above max_chars (10)",
    ),
    "heads not dividing hidden size": (
        section("tiny_base", "hidden_size: 30, num_attention_heads: 4"),
        "tiny_base: hidden_size (30) must be a multiple of twice num_attention_heads (4)",
    ),
    "language not among candidates": (
        section("corpus", "language: {candidates: [de, fr]}"),
        "source 'finance' declares language 'en', which is not among corpus.language.candidates (de, fr)",
    ),
    # Empty names and lists that repeat an entry.
    "empty target module": (MINIMAL + '    lora: {target_modules: [""]}\n', "adapters.0.lora.target_modules.0: must"),
    "no target modules": (MINIMAL + "    lora: {target_modules: []}\n", "adapters.0.lora.target_modules: List should"),
    "repeated target module": (
        MINIMAL + "    lora: {target_modules: [q_proj, q_proj]}\n",
        "adapters.0.lora.target_modules: lists 'q_proj' more than once",
    ),
    "repeated adapter source": (
        MINIMAL.replace("sources: [finance]", "sources: [finance, finance]"),
        "adapters.0.sources: lists 'finance' more than once",
    ),
    "empty path": (MINIMAL.replace("paths: [seeds.txt]", 'paths: [""]'), "sources.0.paths.0: must not be empty"),
    "repeated path": (
        MINIMAL.replace("paths: [seeds.txt]", "paths: [seeds.txt, ./seeds.txt]"),
        "sources.0.paths: lists 'seeds.txt' more than once",
    ),
    "empty domain": (source_option('domain: " "'), "sources.0.domain: must not be empty"),
    "empty text_field": (source_option('text_field: ""'), "sources.0.text_field: must not be empty"),
    "empty teacher model": (section("teacher", 'model: ""'), "teacher.model: must not be empty"),
    "empty base model": (MINIMAL + '    base_model: ""\n', "adapters.0.base_model: must not be empty"),
    "empty eval prompt": (training('eval_prompts: [Hello, ""]'), "adapters.0.training.eval_prompts.1: must not be"),
    "source declared twice": (
        MINIMAL.replace("sources:\n", "sources:\n  - {name: finance, format: text, paths: [b.txt]}\n", 1),
        "sources: 'finance' is declared twice",
    ),
    "repeated language candidate": (section("corpus", "language: {candidates: [en, en]}"), "lists 'en' more than once"),
    "unknown encoding": (source_option("encoding: klingon"), "sources.0.encoding: unknown text encoding 'klingon'"),
    "bytes codec as encoding": (source_option("encoding: base64"), "sources.0.encoding: unknown text encoding"),
    "unknown bad-file policy": (source_option("on_bad_file: skip"), "sources.0.on_bad_file: Input should be"),
    "adapter named like a source": (
        MINIMAL.replace("name: baize_finance", "name: finance"),
        "adapter name 'finance' is already taken by a source, the base models or the costs",
    ),
    "adapter named like the base models": (
        MINIMAL.replace("name: baize_finance", "name: base_models"),
        "adapter name 'base_models' is already taken",
    ),
    "source named like the base models": (
        MINIMAL.replace("name: finance", "name: base_models").replace("[finance]", "[base_models]"),
        "source name 'base_models' is reserved",
    ),
    "source named like the cost forecast": (
        MINIMAL.replace("name: finance", "name: costs").replace("[finance]", "[costs]"),
        "source name 'costs' is reserved for the cost forecast",
    ),
    "extra_body holding a field the pipeline sets": (
        section("teacher", "extra_body: {stop: [x]}"), "teacher.extra_body: stop cannot go in extra_body",
    ),
    "judge model without a price under a dollar budget": (
        "teacher: {model: m, budget: {max_dollars: 1.0}, prices: {m: {input_per_million: 1, output_per_million: 1}}}"
        "\njudge: {model: other}\n" + MINIMAL,
        "judge: budget.max_dollars needs a price for model 'other' in teacher.prices",
    ),
}


@pytest.mark.parametrize("text, fragment", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_names_the_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"invalid configuration in {path}: " in str(error.value)
    assert fragment in str(error.value)


def test_the_first_problem_is_on_the_line_naming_the_file(tmp_path):
    path = write(tmp_path, source_option("shards: true\n    max_seed_chars: 0"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    first, second = str(error.value).splitlines()
    assert first == f"invalid configuration in {path}: sources.0.shards: Input should be a valid integer (got true)"
    assert second == "  sources.0.max_seed_chars: Input should be greater than or equal to 16 (got 0)"


def test_ints_fill_float_settings(tmp_path):
    config = load_config(write(tmp_path, section("teacher", "timeout_s: 30, rate_limit: {requests_per_minute: 600}")))
    assert config.teacher.timeout_s == 30.0 and isinstance(config.teacher.timeout_s, float)
    assert config.teacher.rate_limit.requests_per_minute == 600.0


def test_a_merge_key_may_be_overridden_without_being_a_duplicate(tmp_path):
    merged = MINIMAL + "    training: {<<: {learning_rate: 1, epochs: 2}, epochs: 3}\n"
    adapter = load_config(write(tmp_path, merged)).adapter("baize_finance")
    assert (adapter.training.learning_rate, adapter.training.epochs) == (1.0, 3.0)


CRON_EXPRESSIONS = [
    "0 3 * * 0", "*/15 * * * *", "0 9-17/2 * * mon-fri", "@daily", "0 0 1 jan,jul *", "0 0 29 2 *", "5 4 * * 7",
    "1/5 * * * *", "0 22-2 * * *", "0 0 L * *", "0 0 * * 1#2", "0 0 ? * *",
    "61 25 * * *", "0 3 * *", "* * * * * *", "0 0 30 2 *", "*/0 * * * *", "0 0 * * funday", "", "0 0 0 * *",
    "0 0 * 13 *", "1,,2 * * * *", "@reboot", "0 0 * * 1#6",
]  # fmt: skip


@pytest.mark.parametrize("expression", CRON_EXPRESSIONS)
def test_cron_check_agrees_with_dagsters_schedules(expression):
    try:
        ScheduleDefinition(name="refresh", cron_schedule=expression, job_name="refresh_job")
        dagster_accepts = True
    except DagsterInvalidDefinitionError:
        dagster_accepts = False
    assert (cron_problem(expression) is None) == dagster_accepts


def test_cron_check_also_refuses_a_day_that_never_comes():
    assert cron_problem("0 0 31 4 *") == "that day of the month never occurs in those months"
    assert cron_problem("0 0 31 4 1") is None  # or on Mondays in April, as cron reads it


def test_missing_or_unparsable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(write(tmp_path, "sources: [unclosed"))


@pytest.mark.parametrize(
    "entry, message",
    [
        ("  - adapter: baize_nothing\n", "improves adapter 'baize_nothing', which is not declared"),
        ("  - adapter: baize_finance\n    name: baize_finance\n", "name 'baize_finance' is already an adapter's"),
        ("  - adapter: baize_finance\n    sampling: {answers_per_seed: 1}\n", "answers_per_seed"),
    ],
)
def test_a_self_distillation_entry_is_checked_against_the_adapters(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL + "self_distillation:\n" + entry))
    plan = load_config(write(tmp_path, MINIMAL + "self_distillation:\n  - adapter: baize_finance\n"))
    v2 = plan.distilled_adapter(plan.self_distillation[0])
    assert (v2.name, v2.training.loss_on, v2.sources) == ("baize_finance_v2", "last_ai", ["finance"])
