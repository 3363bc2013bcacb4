from pathlib import Path

import pytest

from baize_assets.core.config import TINY_BASE_MODEL, ConfigError, load_config


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


def test_project_config_declares_the_briefs_sources_and_adapters():
    config = load_config()
    assert [s.name for s in config.sources] == ["quora", "stackoverflow", "medquad", "alpaca"]
    assert config.adapter("baize_general").sources == ["quora", "stackoverflow", "alpaca"]
    assert config.adapter("baize_healthcare").sources == ["medquad"]
    assert not config.source("alpaca").is_self_chat and config.source("medquad").is_self_chat


def test_a_new_domain_needs_only_config_and_gets_baize_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    adapter = config.adapter("baize_finance")
    assert adapter.base_model == TINY_BASE_MODEL
    assert (adapter.lora.r, adapter.lora.alpha, adapter.lora.dropout) == (8, 16, 0.05)
    assert adapter.lora.target_modules == ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    assert adapter.training.learning_rate == 2e-4 and adapter.training.effective_batch_size == 64
    assert adapter.training.cutoff_len == 512 and adapter.training.loss_on == "ai"


@pytest.mark.parametrize(
    "text, fragment",
    [
        (MINIMAL.replace("format: text", "format: text\n    shardz: 3"), "sources.0.shardz: unknown key"),
        (MINIMAL.replace("format: text", "format: xlsx"), "sources.0.format"),
        (MINIMAL.replace("format: text", "format: text\n    shards: 0"), "sources.0.shards"),
        (MINIMAL.replace("sources: [finance]", "sources: [finanse]"), "source 'finanse', which is not declared"),
        (MINIMAL + "    lora: {r: 8, alpah: 16}\n", "adapters.0.lora.alpah: unknown key"),
        (MINIMAL.replace("format: text", "format: csv"), "needs text_field"),
        ("teacher: {temperature: 9}\n" + MINIMAL, "teacher.temperature"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert fragment in str(error.value)
    assert str(path) in str(error.value)


def test_missing_or_unparsable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(write(tmp_path, "sources: [unclosed"))
