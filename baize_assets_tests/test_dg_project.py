"""The project as a dg project, and the pipeline as a ``BaizePipeline`` component in someone else's.

Every ``dg`` command runs through the real executable; the commands start together (each
spends most of its time importing the graph), and each test waits for its own.
"""

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, load_from_defs_folder

from baize_assets.assets.keys import conversations_key, seed_key
from baize_assets.core.config.pipeline import PROJECT_ROOT, load_config
from baize_assets.definitions import build_definitions

DG = Path(sys.executable).with_name("dg")
OPS_CONFIG = Path(__file__).with_name("ops_baize.yaml")
COMPONENT_TYPE = "baize_assets.components.BaizePipeline"
# One partition of a source the teacher is not needed for (its seeds are finished answers).
LAUNCH_PARTITION = "1"


class DgCommand:
    """One ``dg`` command started now in its own process; ``result()`` waits for it."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], logs: Path):
        self.args, self.stdout, self.stderr = args, logs.with_suffix(".out"), logs.with_suffix(".err")
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            # A session of its own: stopping it also stops the dagster processes dg starts.
            self.process = subprocess.Popen(
                [str(DG), *args], cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
            )

    def result(self, timeout: float = 300) -> str:
        """What the command printed (standard output, then standard error), once it has succeeded."""
        self.process.wait(timeout=timeout)
        printed = self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")
        assert self.process.returncode == 0, f"dg {' '.join(self.args)} failed:\n{printed[-6000:]}"
        return printed

    def json(self):
        self.result()
        return json.loads(self.stdout.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def dg_env(dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of one command: its own instance (they start together; SQLite set-up is not
    shared safely), the venv it runs the project in, and only the Baize variables in ``extra``."""
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "VIRTUAL_ENV": sys.prefix, "DAGSTER_HOME": str(dagster_home), "NO_COLOR": "1", **extra}
    for name in ("BAIZE_CONFIG", "BAIZE_EXECUTOR", "BAIZE_OUTPUT_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


def new_dg_project(root: Path) -> str:
    """A bare dg project of its own (a pyproject and a defs folder); returns its root module."""
    module = f"team_{uuid.uuid4().hex[:8]}"  # distinct per project: loaded modules stay in sys.modules
    (root / module / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{module}"\nversion = "0.1.0"\n\n'
        f'[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "{module}"\n'
    )
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    return module


def self_contained_source(config_path: Path) -> str:
    return next(s.name for s in load_config(config_path).sources if not s.is_self_chat)


@pytest.fixture(scope="module")
def dg_commands(tmp_path_factory):
    """check, list, launch and scaffold, all started at once."""
    work = tmp_path_factory.mktemp("dg")
    source = self_contained_source(OPS_CONFIG)
    assets = ",".join(key.to_user_string() for key in (seed_key(source), conversations_key(source)))
    launch_home = work / "launch_home"
    launch_env = dg_env(
        launch_home, BAIZE_CONFIG=str(OPS_CONFIG), BAIZE_EXECUTOR="in_process", BAIZE_OUTPUT_DIR=str(work / "output")
    )
    team = work / "team_project"
    team.mkdir()
    module = new_dg_project(team)
    commands = {
        "check": DgCommand(["check", "defs"], PROJECT_ROOT, dg_env(work / "check_home"), work / "check"),
        "list": DgCommand(["list", "defs", "--json"], PROJECT_ROOT, dg_env(work / "list_home"), work / "list"),
        "launch": DgCommand(
            ["launch", "--assets", assets, "--partition", LAUNCH_PARTITION], PROJECT_ROOT, launch_env, work / "launch"
        ),
        "scaffold": DgCommand(
            ["scaffold", "defs", COMPONENT_TYPE, "my_baize"], team, dg_env(work / "scaffold_home"), work / "scaffold"
        ),
    }
    yield {
        "commands": commands,
        "home": launch_home,
        "output": work / "output",
        "source": source,
        "team": team,
        "module": module,
    }
    for command in commands.values():
        command.stop()


def asset_keys(defs) -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}


@pytest.mark.slow
def test_dg_check_defs_is_clean(dg_commands):
    output = dg_commands["commands"]["check"].result()
    assert "All component YAML validated successfully." in output
    assert "All definitions loaded successfully." in output


@pytest.mark.slow
def test_dg_list_defs_lists_every_asset_of_the_graph(dg_commands):
    listed = dg_commands["commands"]["list"].json()
    expected = asset_keys(build_definitions(load_config()))
    assert {asset["asset_key"] for asset in listed["assets"]} == expected
    # Every asset comes from the component declared in the defs folder.
    assert {asset["source"].split(":")[0] for asset in listed["assets"]} == {"baize_assets/defs/baize/defs.yaml"}


@pytest.mark.slow
def test_dg_launch_materializes_one_partition(dg_commands):
    dg_commands["commands"]["launch"].result()
    source = dg_commands["source"]
    with DagsterInstance.from_config(str(dg_commands["home"])) as instance:
        assert instance.get_latest_materialization_event(seed_key(source)) is not None
        assert instance.get_materialized_partitions(conversations_key(source)) == {LAUNCH_PARTITION}
    written = dg_commands["output"] / source / "conversations"
    assert sorted(p.name for p in written.iterdir()) == [f"shard-{LAUNCH_PARTITION}.parquet"]


def load_project(root: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(root))
    return load_from_defs_folder(path_within_project=root)


@pytest.mark.slow
def test_a_scaffolded_component_with_inline_config_builds_what_the_file_builds(dg_commands, monkeypatch):
    dg_commands["commands"]["scaffold"].result()
    defs_yaml = dg_commands["team"] / dg_commands["module"] / "defs" / "my_baize" / "defs.yaml"
    scaffolded = yaml.safe_load(defs_yaml.read_text())
    assert scaffolded["type"] == COMPONENT_TYPE
    inline = yaml.safe_load(OPS_CONFIG.read_text())
    defs_yaml.write_text(yaml.safe_dump({"type": COMPONENT_TYPE, "attributes": inline}, sort_keys=False))

    loaded = load_project(dg_commands["team"], monkeypatch)

    from_file = build_definitions(load_config(OPS_CONFIG))
    assert asset_keys(loaded) == asset_keys(from_file)
    assert {job.name for job in loaded.jobs} == {job.name for job in from_file.jobs}


def write_component(root: Path, attributes: dict) -> Path:
    module = new_dg_project(root)
    defs_yaml = root / module / "defs" / "pipeline" / "defs.yaml"
    defs_yaml.parent.mkdir()
    defs_yaml.write_text(yaml.safe_dump({"type": COMPONENT_TYPE, "attributes": attributes}, sort_keys=False))
    return defs_yaml


def test_config_file_is_read_relative_to_the_project(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pipeline.yaml").write_text(OPS_CONFIG.read_text())
    write_component(tmp_path, {"config_file": "conf/pipeline.yaml"})
    assert asset_keys(load_project(tmp_path, monkeypatch)) == asset_keys(build_definitions(load_config(OPS_CONFIG)))


def test_config_file_takes_templates(tmp_path, monkeypatch):
    # The project's own defs.yaml reads BAIZE_CONFIG this way.
    monkeypatch.setenv("TEAM_BAIZE_CONFIG", str(OPS_CONFIG))
    write_component(tmp_path, {"config_file": "{{ env('TEAM_BAIZE_CONFIG', 'missing.yaml') }}"})
    assert asset_keys(load_project(tmp_path, monkeypatch)) == asset_keys(build_definitions(load_config(OPS_CONFIG)))


def load_error(root: Path, monkeypatch) -> str:
    """Every message of the exception chain of loading ``root``'s definitions."""
    with pytest.raises(Exception) as caught:
        load_project(root, monkeypatch)
    messages, error = [], caught.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return "\n".join(messages)


def inline_config(**changes) -> dict:
    config = yaml.safe_load(OPS_CONFIG.read_text())
    config.update(changes)
    return config


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (
            inline_config(
                sources=[{"name": "faq", "format": "text", "paths": ["faq.txt"], "shards": True}], adapters=[]
            ),
            "attributes.sources.0.shards",
        ),
        (inline_config(teacher={"modle": "gpt-4o-mini"}), "attributes.teacher.modle"),
        ({"config_file": "baize.yaml", "adapters": []}, "config_file holds the whole configuration: move adapters"),
        ({"adapters": []}, "give the configuration inline (at least sources)"),
    ],
    ids=["wrong_type", "unknown_key", "file_and_inline", "no_sources"],
)
def test_a_bad_attribute_is_named_in_the_error(tmp_path, monkeypatch, attributes, expected):
    defs_yaml = write_component(tmp_path, attributes)
    message = load_error(tmp_path, monkeypatch)
    assert expected in message, message
    assert str(defs_yaml) in message, message


def test_a_missing_config_file_is_named(tmp_path, monkeypatch):
    write_component(tmp_path, {"config_file": "nowhere/baize.yaml"})
    message = load_error(tmp_path, monkeypatch)
    assert f"configuration file not found: {tmp_path / 'nowhere' / 'baize.yaml'}" in message, message
