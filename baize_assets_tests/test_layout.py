"""The layout's rules, read from the source with ``ast``: which way imports go, and how long code gets.

* ``core/`` knows nothing of Dagster: no ``dagster`` or Dagster integration import (the
  Pipes child side, ``dagster_pipes``, is the protocol a training subprocess speaks and
  needs no Dagster), and no import of the Dagster wiring (``assets``, ``cli``,
  ``definitions`` and the other top-level modules of ``baize_assets``).
* Inference and evaluation (``core/chat``, ``core/evaluate``) never import the trainer
  package ``core/train``; they use ``core/model``.
* Training and the asset checks read the conversation schema from ``corpus/schema.py``,
  never from the builder, and nothing anywhere reads a name through ``corpus/build.py``
  that the builder only imports.
* No module of ``baize_assets`` over 400 lines, no function over 80 lines unless the line
  before it (before its first decorator) is a comment starting ``# long:`` that says why.
* No import circle among the modules of ``core/``, counting imports inside functions and
  under ``TYPE_CHECKING``: a circle means two modules that cannot be read, tested or moved
  one without the other.

Imports inside functions count; relative imports are resolved against the module's package.
Each rule is a function of a module's name and source, checked on the real tree and, to
show it can fail, on synthetic sources that break it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = PROJECT_ROOT / "baize_assets"
CORPUS_BUILD = "baize_assets.core.corpus.build"
# The top-level modules of baize_assets that wire the stages into Dagster (everything but core/ and teacher/).
WIRING = ("assets", "cli", "definitions", "defs", "components", "jobs", "resources", "sensors", "schedules",
          "automation", "executors", "demo")  # fmt: skip
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*folders: str) -> dict[str, tuple[Path, str]]:
    """Module name -> (path, source) of every Python file under the folders (relative to the project)."""
    found = {}
    for folder in folders:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            found[module_name(path)] = (path, path.read_text(encoding="utf-8"))
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a ``from`` import of ``module`` names (``level`` dots, then ``target``)."""
    if level == 0:
        return target or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + (target.split(".") if target else []))


def imports(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every module (or module attribute) ``source`` imports, as absolute dotted names.

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name``, since ``name`` may be
    a submodule; the rules match whole dotted segments, so ``pkg.name`` only widens a
    match to what ``pkg`` already holds.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def dagster_violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What a module of core/ imports of Dagster or of the Dagster wiring."""
    bad = []
    for name in sorted(imports(module, source, is_package)):
        top = name.split(".")[0]
        if top == "dagster" or (top.startswith("dagster_") and top != "dagster_pipes"):
            bad.append(f"{module} imports {name}")
        elif any(_within(name, f"baize_assets.{wiring}") for wiring in WIRING):
            bad.append(f"{module} imports the Dagster wiring {name}")
    return bad


def trainer_violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What an inference or evaluation module imports of the training package."""
    return [
        f"{module} imports {name}"
        for name in sorted(imports(module, source, is_package))
        if _within(name, "baize_assets.core.train")
    ]


def builder_violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """Imports of the corpus builder by a module that must read the schema from corpus/schema.py."""
    return [
        f"{module} imports {name}; the schema is in corpus/schema.py"
        for name in sorted(imports(module, source, is_package))
        if _within(name, CORPUS_BUILD)
    ]


def builder_api() -> set[str]:
    """The names corpus/build.py defines itself (not those it imports)."""
    tree = ast.parse((PACKAGE / "core" / "corpus" / "build.py").read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def borrowed_builder_names(module: str, source: str, api: set[str], is_package: bool = False) -> list[str]:
    """Names read through corpus/build.py that it does not define (``from build import X``, ``build.X``)."""
    tree = ast.parse(source)
    aliases, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                if base == CORPUS_BUILD and alias.name not in api:
                    bad.append(f"{module} imports {alias.name} from {CORPUS_BUILD}")
                elif f"{base}.{alias.name}" == CORPUS_BUILD:
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases.update(alias.asname for alias in node.names if alias.name == CORPUS_BUILD and alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr not in api):  # fmt: skip
            bad.append(f"{module} line {node.lineno} reads {node.value.id}.{node.attr}, not defined by the builder")
    return bad


def length_violations(module: str, source: str) -> list[str]:
    """A module over the line limit; functions over theirs without a ``# long:`` comment above them."""
    lines = source.splitlines()
    bad = [f"{module}: {len(lines)} lines > {MAX_MODULE_LINES}"] if len(lines) > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            above = lines[first - 2].strip() if first >= 2 else ""
            if length > MAX_FUNCTION_LINES and not above.startswith("# long:"):
                bad.append(f"{module}.{node.name} (line {node.lineno}): {length} lines > {MAX_FUNCTION_LINES}")
    return bad


def import_circles(names: dict[str, tuple[Path, str]]) -> list[list[str]]:
    """The modules of ``names`` that import each other round a circle, one sorted list per circle."""
    graph = {name: sorted(m for m in imports(name, source, path.stem == "__init__") if m in names and m != name)
             for name, (path, source) in names.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in graph[module]:
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            component = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(component) > 1:
                circles.append(sorted(component))

    for module in graph:
        if module not in order:
            visit(module)
    return circles


def _check(rule, names: dict[str, tuple[Path, str]], *args) -> list[str]:
    return [v for name, (path, source) in names.items() for v in rule(name, source, *args, path.stem == "__init__")]


def test_core_knows_nothing_of_dagster():
    core = modules("baize_assets/core")
    assert len(core) > 40, "the core package was not found where the rules look"
    assert _check(dagster_violations, core) == []


def test_inference_and_evaluation_never_import_the_trainer():
    used = {n: m for n, m in modules("baize_assets/core").items()
            if _within(n, "baize_assets.core.chat") or _within(n, "baize_assets.core.evaluate")}  # fmt: skip
    assert {"baize_assets.core.chat.chat_model", "baize_assets.core.evaluate.held_out"} <= set(used)
    assert _check(trainer_violations, used) == []


def test_training_and_checks_read_the_schema_module_not_the_builder():
    readers = {n: m for n, m in modules("baize_assets/core/train", "baize_assets/assets").items()
               if _within(n, "baize_assets.core.train") or n == "baize_assets.assets.checks"}  # fmt: skip
    assert "baize_assets.assets.checks" in readers and "baize_assets.core.train.trainer" in readers
    assert _check(builder_violations, readers) == []


def test_nothing_reads_a_name_the_builder_only_imports():
    api = builder_api()
    assert {"build_corpus", "single_turn_corpus", "Corpus", "CORPUS_LOGIC_VERSION"} <= api
    assert "CONVERSATION_SCHEMA" not in api and "parse_transcript" not in api
    everything = modules("baize_assets", "baize_assets_tests", "benchmarks")
    assert _check(borrowed_builder_names, everything, api) == []


def test_no_module_of_core_imports_itself_round_a_circle():
    core = modules("baize_assets/core")
    assert "baize_assets.core.collect.client" in core
    assert import_circles(core) == []


def test_modules_and_functions_stay_short():
    everything = modules("baize_assets")
    assert [v for name, (_, source) in everything.items() for v in length_violations(name, source)] == []


def _function(name: str, body_lines: int, comment: str | None = None) -> str:
    above = f"{comment}\n" if comment else ""
    return above + f"def {name}():\n" + "    x = 1\n" * (body_lines - 1)


def test_the_rules_catch_what_they_forbid():
    chat = "baize_assets.core.chat.decode"
    assert dagster_violations(chat, "import dagster\n")
    assert dagster_violations(chat, "from dagster_openai import OpenAIResource\n")
    assert dagster_violations(chat, "def f():\n    from ...assets.keys import adapter_key\n")
    assert dagster_violations(chat, "from ... import definitions\n")
    assert dagster_violations("baize_assets.core", "from .. import cli\n", True)
    assert not dagster_violations(chat, "from dagster_pipes import open_dagster_pipes\nfrom ..config import pipeline\n")
    assert not dagster_violations(chat, "from ...teacher import text\nimport assets_helper\n")

    assert trainer_violations(chat, "from ..train.trainer import encode\n")
    assert trainer_violations(chat, "def f():\n    from ..train import trainer\n")
    assert trainer_violations("baize_assets.core.evaluate", "from ..train import checkpoints\n", True)
    assert trainer_violations(chat, "import baize_assets.core.train.summary\n")
    assert not trainer_violations(chat, "from ..model.samples import encode\nfrom ..training_notes import x\n")

    trainer = "baize_assets.core.train.trainer"
    assert builder_violations(trainer, "from ..corpus.build import CONVERSATION_SCHEMA\n")
    assert builder_violations(trainer, "def f():\n    from ..corpus import build as corpus\n")
    assert builder_violations("baize_assets.assets.checks", "from ..core.corpus import build\n")
    assert not builder_violations(trainer, "from ..corpus import schema\nfrom ..corpus.build_notes import x\n")

    api = {"build_corpus", "Corpus"}
    borrowed = "from baize_assets.core.corpus import build as corpus\ncorpus.build_corpus\ncorpus.CONVERSATION_SCHEMA\n"
    assert borrowed_builder_names("baize_assets_tests.test_x", borrowed, api) == [
        "baize_assets_tests.test_x line 3 reads corpus.CONVERSATION_SCHEMA, not defined by the builder"
    ]
    assert borrowed_builder_names(trainer, "from ..corpus.build import Corpus, turns_of\n", api) == [
        f"{trainer} imports turns_of from {CORPUS_BUILD}"
    ]
    assert not borrowed_builder_names(trainer, "from ..corpus import schema as corpus\ncorpus.turns_of\n", api)

    assert length_violations("m", _function("f", 81)) == ["m.f (line 1): 81 lines > 80"]
    assert length_violations("m", _function("f", 81, "# long: one table of cases")) == []
    assert length_violations("m", _function("f", 81, "# a comment that gives no reason"))
    assert length_violations("m", _function("f", 80)) == []
    decorated = "# long: one table\n@decorator\n" + _function("f", 81)
    assert length_violations("m", decorated) == []
    assert length_violations("m", "class A:\n" + "\n".join("    " + line for line in _function("g", 90).splitlines()))
    assert length_violations("m", "x = 1\n" * 401) == ["m: 401 lines > 400"]

    path = Path("m.py")
    circle = {"p.a": (path, "from . import b\n"), "p.b": (path, "def f():\n    from .c import x\n"),
              "p.c": (path, "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n"),
              "p.d": (path, "from . import a\n")}
    assert import_circles(circle) == [["p.a", "p.b", "p.c"]]
    assert import_circles({**circle, "p.c": (path, "import os\n")}) == []
    assert length_violations("m", "x = 1\n" * 400) == []
