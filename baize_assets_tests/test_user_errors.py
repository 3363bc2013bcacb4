"""Errors a person must fix reach them as one readable line: in the Dagster CLI and in a run."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterEventType, instance_for_test, materialize
from dagster_openai import OpenAIResource

from baize_assets.assets import build_assets, seed_key
from baize_assets.core.config.pipeline import PipelineConfig, SourceConfig
from baize_assets.resources import BaizeStorage

DAGSTER_CLI = Path(sys.executable).with_name("dagster")


def test_dagster_definitions_validate_shows_the_config_error_plainly(tmp_path):
    bad = tmp_path / "baize.yaml"
    bad.write_text("sources:\n  - name: quora\n    format: text\n    paths: [q.txt]\n    shards: true\n")
    env = {**os.environ, "BAIZE_CONFIG": str(bad), "DAGSTER_HOME": str(tmp_path), "NO_COLOR": "1"}
    result = subprocess.run(
        [str(DAGSTER_CLI), "definitions", "validate", "-m", "baize_assets.definitions"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    message = f"invalid configuration in {bad}: sources.0.shards: Input should be a valid integer (got true)"
    assert f"ConfigError: {message}\n" in output, output


def materialize_seeds(tmp_path: Path, source: SourceConfig, instance):
    resources = {
        "storage": BaizeStorage(output_dir=str(tmp_path / "output")),
        "openai": OpenAIResource(api_key="sk-test-not-used"),
    }
    assets = build_assets(PipelineConfig(sources=[source]))
    return materialize(assets, selection=[seed_key(source.name)], resources=resources, instance=instance,
                       raise_on_error=False)  # fmt: skip


def test_a_broken_seed_file_fails_the_run_with_file_and_line_only(tmp_path):
    seeds = tmp_path / "questions.csv"
    seeds.write_bytes("question\nWhat is a bond?\nQu'est-ce qu'un caf\xe9 ?\n".encode("latin-1"))
    source = SourceConfig(name="finance", format="csv", text_field="question", paths=[str(seeds)])
    with instance_for_test() as instance:
        result = materialize_seeds(tmp_path, source, instance)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data
    expected = (
        f"{seeds}:3: not valid UTF-8 (byte 0xe9); set `encoding: latin-1` on source 'finance' "
        "if the file is ISO-8859-1 (cp1252 for Windows)"
    )
    assert data.user_failure_data.description == expected
    assert {k: v.value for k, v in data.user_failure_data.metadata.items()} == {"file": str(seeds), "line": 3}
    assert data.error.cause is None and data.error.context is None  # no chained traceback behind it


def test_quarantines_are_counted_in_the_seed_metadata(tmp_path):
    folder = tmp_path / "xml"
    folder.mkdir()
    document = (
        '<Document id="{n}"><QAPairs><QAPair pid="1"><Question>{question}</Question></QAPair>'
        '<QAPair pid="2"><Question>What causes {n}?</Question></QAPair></QAPairs></Document>'
    )
    (folder / "1.xml").write_text(document.format(n=1, question="[|AI|] What is gout?"))
    (folder / "2.xml").write_text("<Document>\n<QAPairs>")
    (folder / "3.xml").write_text(document.format(n=3, question="What is flu?"))
    source = SourceConfig(name="medquad", format="medquad", paths=[str(folder)])
    with instance_for_test() as instance:
        result = materialize_seeds(tmp_path, source, instance)
        records = instance.get_records_for_run(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    assert result.success
    (record,) = records
    metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert metadata["dagster/row_count"] == 3 and metadata["rows_read"] == 4
    assert (metadata["quarantined_rows"], metadata["quarantined_files"]) == (1, 1)
    assert metadata["quarantined_by_reason"] == {"chat marker in seed": 1, "bad file": 1}
