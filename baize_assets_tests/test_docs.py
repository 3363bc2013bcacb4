"""The README and the guides in ``docs/`` say what the code does: every command, snippet and link is checked.

Read from README.md and every ``docs/*.md``, offline and without starting anything:

* shell commands (fenced ``bash``/``sh``/``shell``/``console`` blocks, ``$ `` lines of other
  blocks, and inline code that starts with one of these programs): ``make`` names Makefile
  targets; ``baize`` (also ``.venv/bin/baize``) a subcommand and the flags it accepts, a
  fenced command parsed whole by the CLI's own argparse parser; ``dagster``, ``dg``,
  ``dagster-webserver``, ``dagster-daemon`` and ``dagster-celery`` subcommands and flags of
  their click commands, and the jobs, asset selections, partitions, pools, modules and
  component types they name in the project's definitions (every ``baize*.yaml`` of the
  project); ``python benchmarks/X.py`` a benchmark and flags its parser declares; ``python -m
  M`` a module that exists. A flag alone in inline code belongs to the last such command of
  its section. Other tools' commands (vllm, pip, torchrun, kubectl, ...) are not checked.
* paths into the repository (``deploy/...``, ``benchmarks/...``, ``baize*.yaml``, ``*.py``
  files, ``file.py::test_name``) in commands and inline code exist, and tests are defined;
* ``yaml`` blocks sharing a top-level key with the pipeline's configuration are valid
  configurations (a snippet without ``sources:`` merged over the project's baize.yaml; a
  ``training:`` fragment under its first adapter; a dg component file's attributes);
* ``python`` blocks compile and import only what ``baize_assets`` has; ``json`` blocks parse;
* ``graphql`` blocks name asset keys that exist;
* relative links and images point at files that exist, and ``#anchors`` at headings there;
* ``BAIZE_*`` variables are ones the code reads, and the README's Layout names every package.

Each problem is reported as ``file:line: what is wrong``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from unittest import mock

import yaml

from baize_assets.core.config.pipeline import PROJECT_ROOT, ConfigError, PipelineConfig, load_config
from baize_assets.core.config.training import TrainingConfig

DOCS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Programs whose commands are checked; every other program is another tool's (vllm, pip, torchrun, ...).
CLICK_PROGRAMS = {"dagster", "dg", "dagster-webserver", "dagster-daemon", "dagster-celery"}
CHECKED = {"make", "baize", "python", "pytest", *CLICK_PROGRAMS}
# A flag alone in inline code is checked against the last of these commands in its section.
FLAG_OWNERS = {"baize", "python"}
# Paths a page names that are not in this repository: another project's files, or ones the page writes.
ELSEWHERE = {"train_baize_general.py", "llama.cpp/convert_hf_to_gguf.py", "convert_hf_to_gguf.py"}
REPO_PREFIXES = ("deploy/", "benchmarks/", "baize_assets/", "baize_assets_tests/", "data/seeds/", "data/judge/",
                 "docs/")


@dataclass
class Block:
    path: Path
    line: int  # of the block's first line of content
    language: str
    text: str


@dataclass
class Span:
    path: Path
    line: int
    text: str


@dataclass
class Heading:
    line: int
    text: str


@dataclass
class Doc:
    path: Path
    events: list = field(default_factory=list)  # Heading, Block and Span in page order
    prose: list[tuple[int, str]] = field(default_factory=list)  # lines outside code blocks

    @property
    def blocks(self) -> list[Block]:
        return [e for e in self.events if isinstance(e, Block)]

    @property
    def spans(self) -> list[Span]:
        return [e for e in self.events if isinstance(e, Span)]


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(PROJECT_ROOT)}:{line}"


def parse_doc(path: Path, text: str | None = None) -> Doc:
    lines = (path.read_text(encoding="utf-8") if text is None else text).split("\n")
    doc, paragraph = Doc(path), []

    def flush():
        joined = "\n".join(text for _, text in paragraph)
        for match in SPAN.finditer(joined):
            line = paragraph[0][0] + joined.count("\n", 0, match.start())
            doc.events.append(Span(path, line, re.sub(r"\s*\n\s*", " ", match.group(1)).strip()))
        paragraph.clear()

    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            flush()
            indent, marker, language = fence.groups()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(marker)), len(lines))
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
            doc.events.append(Block(path, i + 2, language.lower(), "\n".join(body)))
            i = end + 1
            continue
        heading = HEADING.match(lines[i])
        if heading or not lines[i].strip():
            flush()
            if heading:
                doc.events.append(Heading(i + 1, heading.group(2)))
        else:
            paragraph.append((i + 1, lines[i]))
        doc.prose.append((i + 1, lines[i]))
        i += 1
    flush()
    return doc


@cache
def docs() -> tuple[Doc, ...]:
    return tuple(parse_doc(path) for path in DOCS)


# ---- what the project defines ----------------------------------------------------------


@dataclass
class Project:
    asset_keys: set = field(default_factory=set)  # tuples of key parts
    partitions: dict = field(default_factory=dict)  # key tuple -> its partition keys
    jobs: set = field(default_factory=set)
    pools: set = field(default_factory=set)


@cache
def project() -> Project:
    """The definitions of every configuration the project ships (baize.yaml, baize.smollm2.yaml, ...)."""
    from baize_assets.components.baize_pipeline import build_definitions

    found = Project()
    for config_file in sorted(PROJECT_ROOT.glob("baize*.yaml")):
        repository = build_definitions(load_config(config_file)).get_repository_def()
        for assets_def in repository.asset_graph.assets_defs:
            found.pools.add(getattr(assets_def.node_def, "pool", None))
            for key in assets_def.keys:
                found.asset_keys.add(tuple(key.path))
                if assets_def.partitions_def is not None:
                    found.partitions[tuple(key.path)] = set(assets_def.partitions_def.get_partition_keys())
        found.jobs |= {job.name for job in repository.get_all_jobs()}
    found.pools.discard(None)
    return found


@cache
def make_targets() -> set[str]:
    text = (PROJECT_ROOT / "Makefile").read_text()
    return {name for name in re.findall(r"^([A-Za-z0-9_-]+)\s*:(?!=)", text, re.M)}


@cache
def tracked_files() -> tuple[str, ...]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return tuple(name for name in listed if name and (PROJECT_ROOT / name).exists())


# ---- option parsers: argparse (baize, benchmarks) and click (dagster, dg) ---------------


@dataclass
class Option:
    takes_value: bool
    choices: tuple | None = None


def argparse_options(parser: argparse.ArgumentParser) -> dict[str, Option]:
    return {name: Option(action.nargs != 0, tuple(action.choices) if action.choices else None)
            for action in parser._actions for name in action.option_strings}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


class _Captured(Exception):
    pass


def captured_parser(build_and_parse) -> argparse.ArgumentParser:
    """The parser a function builds and then parses with, taken at its ``parse_args``."""

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            build_and_parse()
        except _Captured as captured:
            return captured.args[0]
    raise AssertionError(f"{build_and_parse} parsed no arguments")


@cache
def baize_parsers() -> dict[str, argparse.ArgumentParser]:
    from baize_assets.cli import _parser
    from baize_assets.teacher.cli import _parse_args

    parsers = subcommands(_parser())
    parsers["teacher"] = captured_parser(lambda: _parse_args([]))  # `baize teacher` hands its argv on
    return parsers


@cache
def script_options(script: Path) -> dict[str, Option]:
    """The flags a script's ``add_argument`` calls declare (read, not run: a benchmark's imports are heavy)."""
    options = {"-h": Option(False), "--help": Option(False)}
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            keywords = {k.arg: k.value for k in node.keywords}
            action = keywords.get("action")
            flag = isinstance(action, ast.Constant) and action.value in {"store_true", "store_false", "count"}
            try:
                choices = tuple(ast.literal_eval(keywords["choices"])) if "choices" in keywords else None
            except ValueError:
                choices = None
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("-"):
                    options[arg.value] = Option(not flag, choices)
    return options


def option_problems(options: dict[str, Option], args: list[str], program: str) -> list[str]:
    problems, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1 and not re.fullmatch(r"-[\d.]+", arg):
            name, equals, value = arg.partition("=")
            option = options.get(name)
            if option is None:
                problems.append(f"`{program}` has no option {name}")
            elif option.takes_value:
                if not equals and i + 1 < len(args):
                    value, i = args[i + 1], i + 1
                if option.choices and value and value not in option.choices:
                    choices = ", ".join(map(str, option.choices))
                    problems.append(f"`{program} {name}` takes one of {choices}, not {value}")
        i += 1
    return problems


def baize_problems(args: list[str], whole: bool) -> list[str]:
    parsers = baize_parsers()
    if not args or args[0].startswith("-"):
        return option_problems({"-h": Option(False), "--help": Option(False)}, args, "baize")
    if args[0] not in parsers:
        return [f"`baize` has no subcommand {args[0]} (it has {', '.join(sorted(parsers))})"]
    parser = parsers[args[0]]
    if not whole:
        return option_problems(argparse_options(parser), args[1:], f"baize {args[0]}")
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(args[1:])
        except SystemExit as exit:
            if exit.code:
                return [f"`baize {args[0]}`: {errors.getvalue().strip().splitlines()[-1]}"]
    return []


@cache
def click_command(program: str):
    if program == "dagster":
        return importlib.import_module("dagster._cli").create_dagster_cli()
    if program == "dg":
        return importlib.import_module("dagster_dg_cli.cli").create_dg_cli()
    module, name = {"dagster-webserver": ("dagster_webserver.cli", "cli"),
                    "dagster-daemon": ("dagster._daemon.cli", "cli"),
                    "dagster-celery": ("dagster_celery.cli", "main")}[program]
    return getattr(importlib.import_module(module), name)


def click_problems(program: str, args: list[str]) -> list[str]:
    import click

    command, names = click_command(program), [program]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        try:
            sub = command.get_command(click.Context(command), args[0])
        except Exception:  # a group whose commands come from a project (dg scaffold defs <component type>)
            break
        if sub is None:
            return [f"`{' '.join(names)}` has no subcommand {args[0]}"]
        names.append(args.pop(0))
        command = sub
    params = {opt: param for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    options = {opt: Option(not getattr(param, "is_flag", False) and not getattr(param, "count", False))
               for opt, param in params.items()}
    options.update({opt: Option(False) for opt in command.get_help_option_names(click.Context(command))})
    problems = option_problems(options, args, " ".join(names))
    values, positionals, i = {}, [], 0
    while i < len(args) and args[i] != "--":
        name, equals, value = args[i].partition("=")
        if name in params and options[name].takes_value:
            if not equals and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            values.setdefault(params[name].name, []).append(value)
        elif not name.startswith("-"):
            positionals.append(args[i])
        i += 1
    return problems + definition_problems(names, values, positionals)


def definition_problems(names: list[str], values: dict[str, list[str]], positionals: list[str]) -> list[str]:
    """What a dagster/dg command names must exist: jobs, assets, partitions, pools, modules, component types."""
    defined, problems = project(), []
    for job in values.get("job_name", []) + values.get("job", []):
        if job not in defined.jobs:
            problems.append(f"no job {job} (jobs: {', '.join(sorted(defined.jobs))})")
    for selection in values.get("select", []) + values.get("assets", []):
        problems += selection_problems(selection, values.get("partition", []))
    for module in values.get("module_name", []):
        if importlib.util.find_spec(module) is None:
            problems.append(f"no module {module}")
    if names[1:] == ["instance", "concurrency", "set"] and positionals and positionals[0] not in defined.pools:
        problems.append(f"no step runs in pool {positionals[0]} (pools: {', '.join(sorted(defined.pools))})")
    if names[1:] == ["scaffold", "defs"] and positionals and "." in positionals[0]:
        problems += object_problems(positionals[0])
    return problems


def selection_problems(selection: str, partitions: list[str]) -> list[str]:
    defined, problems = project(), []
    for part in selection.split(","):
        key = part.strip().strip("*+")
        if not re.fullmatch(r"[\w-]+(/[\w-]+)*", key):
            problems.append(f"cannot check the asset selection {part!r}")
        elif tuple(key.split("/")) not in defined.asset_keys:
            problems.append(f"no asset {key}")
        else:
            known = defined.partitions.get(tuple(key.split("/")))
            problems += [f"{key} has no partition {p}" for p in partitions if known is not None and p not in known]
    return problems


def object_problems(dotted: str) -> list[str]:
    module_name, _, name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        return [f"cannot import {module_name}: {error}"]
    if hasattr(module, name) or (hasattr(module, "__path__") and importlib.util.find_spec(dotted) is not None):
        return []
    return [f"{module_name} has no {name}"]


# ---- commands --------------------------------------------------------------------------


def program_of(word: str) -> str:
    name = word.rsplit("/", 1)[-1] if word.startswith((".venv/", "/")) else word
    return "python" if re.fullmatch(r"python3?(\.\d+)?", name) else name


def program_word(words: list[str]) -> str:
    return next((word for word in words if not re.fullmatch(r"[A-Za-z_]\w*=.*", word)), "")


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, without comments, split at ``&&``, ``||``, ``;``, ``|`` and ``&``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [command for command in commands + [current] if command]


def command_problems(words: list[str], whole: bool) -> list[str]:
    """What is wrong with one command: env assignments first, then the program and its arguments."""
    problems = [p for word in words for p in path_problems(word.partition("=")[2] if "=" in word else word)]
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        words = words[1:]
    if not words:
        return problems
    program, args = program_of(words[0]), words[1:]
    # A module of this project run by any program (python -m, torchrun -m, a launcher's command) must exist.
    problems += [f"no module {module}" for flag, module in zip(args, args[1:])
                 if flag == "-m" and module.startswith("baize_assets") and importlib.util.find_spec(module) is None]
    if program == "make":
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        problems += [f"no make target {t} (targets: {', '.join(sorted(make_targets()))})"
                     for t in targets if t not in make_targets()]
    elif program == "baize":
        problems += baize_problems(args, whole)
    elif program in CLICK_PROGRAMS:
        problems += click_problems(program, list(args))
    elif program == "python" and args and args[0].startswith("benchmarks/") and (PROJECT_ROOT / args[0]).is_file():
        problems += option_problems(script_options(PROJECT_ROOT / args[0]), args[1:], f"python {args[0]}")
    return problems


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """(line, command) of a block: every line of a shell block, ``$ `` lines of others; ``\\`` joins lines."""
    found, pending, start = [], "", 0
    for offset, line in enumerate(block.text.split("\n")):
        if block.language not in SHELL_LANGUAGES:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        elif line.startswith("$ "):
            line = line[2:]
        if not pending:
            start = block.line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append((start, pending + line))
        pending = ""
    return found


def doc_command_problems(doc: Doc) -> list[str]:
    """Every command of a page, fenced or inline; a lone flag in inline code goes with its section's last command."""
    problems, last = [], None
    for event in doc.events:
        if isinstance(event, Heading):
            last = None
        elif isinstance(event, Block):
            for line, text in shell_lines(event):
                try:
                    commands = split_commands(text)
                except ValueError as error:
                    problems.append(f"{where(doc.path, line)}: cannot parse `{text}`: {error}")
                    continue
                for words in commands:
                    at = f"{where(doc.path, line)}: `{' '.join(words)}`"
                    problems += [f"{at}: {p}" for p in command_problems(words, True)]
                    last = words if program_of(program_word(words)) in CHECKED else last
        else:
            try:
                words = shlex.split(event.text)
            except ValueError:
                continue
            if not words:
                continue
            if words[0].startswith("-") and last is not None and program_of(program_word(last)) in FLAG_OWNERS:
                words = [*last[: next((i for i, w in enumerate(last) if w.startswith("-")), len(last))], *words]
            elif words[0].startswith("-") or len(words) == 1:
                continue  # a flag of another tool's command, or a name (its path is checked on its own)
            elif program_of(program_word(words)) in CHECKED:
                last = words
            problems += [f"{where(doc.path, event.line)}: `{event.text}`: {p}" for p in command_problems(words, False)]
    return problems


# ---- paths, test names, configuration, Python, GraphQL, links ---------------------------


def path_problems(token: str, test_file: list | None = None) -> list[str]:
    """A path into the repository must exist; ``file.py::name`` must name a test that file defines."""
    token = token.strip("'\"")
    name, _, test = token.partition("::")
    if token.startswith("::") and test_file:
        name = test_file[0]
    is_path = name.startswith(REPO_PREFIXES) or re.fullmatch(r"[\w.-]+(/[\w.-]+)*\.(py|ya?ml)", name)
    if not name or not is_path or re.search(r"[<>*{}$]|\.\.\.", name) or name in ELSEWHERE:
        return []
    found = resolve(name)
    if found is None:
        return [f"no file {name} in the repository"]
    if test_file is not None:
        test_file[:] = [name]
    test = test.split("[")[0]
    if test and not re.search(rf"^(async )?def {re.escape(test)}\(", found.read_text(encoding="utf-8"), re.M):
        return [f"{name} defines no test {test}"]
    return []


def resolve(name: str) -> Path | None:
    """The file or folder a page names: from the project's root, else the end of a path in the repository."""
    if (PROJECT_ROOT / name).exists():
        return PROJECT_ROOT / name
    suffix = "/" + name.rstrip("/")
    folders = {str(Path(f).parent) for f in tracked_files()} if name.endswith("/") else ()
    match = next((f for f in (*tracked_files(), *folders) if f.endswith(suffix)), None)
    return PROJECT_ROOT / match if match else None


def inline_path_problems(doc: Doc) -> list[str]:
    problems, test_file, line = [], [], None
    for span in doc.spans:
        if span.line != line:
            test_file, line = [], span.line
        if " " not in span.text:
            at = f"{where(doc.path, span.line)}: `{span.text}`"
            problems += [f"{at}: {p}" for p in path_problems(span.text, test_file)]
    return problems


def config_problems(block: Block, tmp_path: Path) -> list[str]:
    """A ``yaml`` block of the pipeline's keys must load; other tools' settings share none of them."""
    data = yaml.safe_load(block.text)
    if not isinstance(data, dict):
        return []
    project_config = yaml.safe_load((PROJECT_ROOT / "baize.yaml").read_text())
    if data.get("type") == "baize_assets.components.BaizePipeline":
        config = data.get("attributes") or {}
        if "config_file" in config:
            return path_problems(config["config_file"])
    elif set(data) & set(PipelineConfig.model_fields):
        # A snippet without sources is a change to the project's own file: its top-level keys replace those.
        config = data if "sources" in data else {**project_config, **data}
    elif set(data) <= set(TrainingConfig.model_fields):
        config = project_config
        config["adapters"][0]["training"] = {**(config["adapters"][0].get("training") or {}), **data}
    else:
        return []
    path = tmp_path / "baize.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        load_config(path)
    except ConfigError as error:
        return [str(error).replace(str(path), where(block.path, block.line))]
    return []


def python_problems(block: Block) -> list[str]:
    try:
        tree = ast.parse(block.text)
    except SyntaxError as error:
        return [f"{where(block.path, block.line + (error.lineno or 1) - 1)}: does not compile: {error.msg}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "baize_assets":
            at = where(block.path, block.line + node.lineno - 1)
            problems += [f"{at}: {p}" for alias in node.names for p in object_problems(f"{node.module}.{alias.name}")]
        elif isinstance(node, ast.Import):
            problems += [f"{where(block.path, block.line + node.lineno - 1)}: no module {alias.name}"
                         for alias in node.names
                         if alias.name.startswith("baize_assets") and importlib.util.find_spec(alias.name) is None]
    return problems


def graphql_problems(block: Block) -> list[str]:
    problems = []
    for match in re.finditer(r"path:\s*\[([^\]]*)\]", block.text):
        key = tuple(re.findall(r'"([^"]*)"', match.group(1)))
        if key not in project().asset_keys:
            line = block.line + block.text.count("\n", 0, match.start())
            problems.append(f"{where(block.path, line)}: no asset {'/'.join(key)}")
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for event in parse_doc(path).events:
        if isinstance(event, Heading):
            base = slug(event.text)
            seen[base if base not in seen else f"{base}-{seen[base]}"] = 0
            seen[base] = seen.get(base, 0) + 1
    return set(seen)


def link_problems(doc: Doc) -> list[str]:
    problems = []
    for line, text in doc.prose:
        for match in LINK.finditer(SPAN.sub("", text)):
            target = match.group(2)
            if re.match(r"[a-z][a-z+.-]*:", target):
                continue  # http:, https:, mailto:
            file, _, anchor = target.partition("#")
            path = (doc.path.parent / file).resolve() if file else doc.path
            if not path.exists():
                problems.append(f"{where(doc.path, line)}: {target}: no file {file}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                problems.append(f"{where(doc.path, line)}: {target}: no heading #{anchor} in {file or doc.path.name}")
    return problems


def blocks(language: str) -> list[Block]:
    return [block for doc in docs() for block in doc.blocks if block.language == language]


# ---- the tests -------------------------------------------------------------------------


def test_commands_name_real_targets_subcommands_flags_jobs_and_assets():
    problems = [p for doc in docs() for p in doc_command_problems(doc)]
    assert not problems, "\n".join(problems)


def test_paths_into_the_repository_and_tests_they_name_exist():
    problems = [p for doc in docs() for p in inline_path_problems(doc)]
    assert not problems, "\n".join(problems)


def test_configuration_snippets_are_valid_configs(tmp_path):
    ours = [b for b in blocks("yaml") if isinstance(d := yaml.safe_load(b.text), dict)
            and (set(d) & set(PipelineConfig.model_fields) or d.get("type") == "baize_assets.components.BaizePipeline")]
    assert len(ours) >= 8
    problems = [p for block in blocks("yaml") for p in config_problems(block, tmp_path)]
    assert not problems, "\n".join(problems)


def test_python_snippets_compile_and_import_only_what_exists():
    assert blocks("python")
    problems = [p for block in blocks("python") for p in python_problems(block)]
    assert not problems, "\n".join(problems)


def test_graphql_and_json_snippets_name_real_assets_and_parse():
    assert blocks("graphql")
    problems = [p for block in blocks("graphql") for p in graphql_problems(block)]
    for block in blocks("json"):
        try:
            json.loads(block.text)
        except ValueError as error:
            problems.append(f"{where(block.path, block.line)}: not JSON: {error}")
    assert not problems, "\n".join(problems)


def test_links_and_anchors_resolve():
    problems = [p for doc in docs() for p in link_problems(doc)]
    assert not problems, "\n".join(problems)


def test_every_guide_is_linked_from_the_readme_and_links_back():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for page in DOCS[1:]:
        assert f"](docs/{page.name})" in readme, f"README.md does not link {page.name}"
        first = page.read_text().split("\n")[:4]
        assert first[0].startswith("# ") and any("](../README.md)" in line for line in first), page.name


def test_environment_variables_named_are_read_by_the_code():
    code = "\n".join((PROJECT_ROOT / f).read_text(errors="ignore") for f in tracked_files()
                     if f.startswith(("baize_assets/", "benchmarks/", "baize_assets_tests/", "deploy/", "Makefile")))
    read = set(re.findall(r"BAIZE_[A-Z0-9_]+", code))
    named = [(doc.path, line, text) for doc in docs() for line, text in doc.prose]
    named += [(block.path, block.line, block.text) for doc in docs() for block in doc.blocks]
    problems = [f"{where(path, line)}: {name} is read nowhere in the code"
                for path, line, text in named for name in re.findall(r"BAIZE_[A-Z0-9_]+", text) if name not in read]
    assert not problems, "\n".join(problems)


def test_the_readme_layout_names_every_package():
    layout = (PROJECT_ROOT / "README.md").read_text().split("## Layout", 1)[1]
    package = PROJECT_ROOT / "baize_assets"
    missing = [str(p.parent.relative_to(package)) for p in package.rglob("__init__.py")
               if p.parent != package and f"{p.parent.name}/" not in layout]
    assert not missing, f"README.md's Layout does not name {missing}"


STALE = """# Stale

```bash
make tests
.venv/bin/baize chat --adapter x --temprature 0
.venv/bin/baize serve
dagster instance concurrency set training 1
dagster asset materialize -m baize_assets.definitions --select 'medquad/transcripts*' --partition 9
dg launch --job train_everything
.venv/bin/python benchmarks/bench_shared_limit.py --store memcached
```

`baize estimate --source quora --price 2` and `--verbose`; `test_lineage.py::test_nothing_like_this`,
`deploy/nowhere.yaml`, `torchrun -m baize_assets.core.train.pipez`. See [the judge](#the-judge) and
[costs](docs/nowhere.md).

```graphql
mutation { launchPartitionBackfill(backfillParams: {partitionNames: ["1"], assetSelection: [
  {path: ["medquad", "transcripts"]}, {path: ["training_sets", "baize_healthcare"]},
  {path: ["adapters", "baize_healthcare"]}, {path: ["evaluations", "baize_healthcare"]}]}) { __typename } }
```

```python
from baize_assets.core.train.trainer import train_everything
```

```yaml
teacher: {model: gpt-4o-mini, temprature: 0.7}
```
"""


def test_the_checks_catch_stale_snippets(tmp_path):
    doc = parse_doc(PROJECT_ROOT / "README.md", STALE)
    found = doc_command_problems(doc) + inline_path_problems(doc) + link_problems(doc)
    found += [p for b in doc.blocks if b.language == "graphql" for p in graphql_problems(b)]
    found += [p for b in doc.blocks if b.language == "python" for p in python_problems(b)]
    found += [p for b in doc.blocks if b.language == "yaml" for p in config_problems(b, tmp_path)]
    expected = [
        "README.md:4: `make tests`: no make target tests", "--temprature", "README.md:6: `.venv/bin/baize serve`",
        "no step runs in pool training", "medquad/transcripts has no partition 9", "no job train_everything",
        "takes one of sqlite, redis, not memcached", "has no option --price", "has no option --verbose",
        "test_lineage.py defines no test test_nothing_like_this", "no file deploy/nowhere.yaml",
        "no module baize_assets.core.train.pipez",
        "no heading #the-judge", "no file docs/nowhere.md", "README.md:19: no asset training_sets/baize_healthcare",
        "README.md:20: no asset adapters/baize_healthcare", "no asset evaluations/baize_healthcare",
        "trainer has no train_everything", "teacher.temprature",
    ]
    missing = [text for text in expected if not any(text in problem for problem in found)]
    assert not missing, f"not caught: {missing}\nfound:\n" + "\n".join(found)
    assert len(found) == len(expected), "\n".join(found)
