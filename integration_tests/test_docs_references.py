"""What the docs name exists: files, ``fedmm`` CLI flags, config keys and technique arguments.

Checked in ``README.md``, ``docs/**/*.md`` and ``packages/*/README.md`` (no training, seconds):

* every link target and every repository path in code (``docs/...``, ``packages/...``,
  ``integration_tests/...``, ``tools/...``, ``.ci/...``; a ``*`` is a glob, a trailing ``/`` a
  folder), and every bare ``something.py`` named in code exists;
* every ``--flag`` of a ``fedmm <command>`` line belongs to that command's parser
  (:func:`fedmm.core.cli.make_parser`), ``fedmm <command>`` is a command and ``fedmm bench
  <name>`` a registered benchmark; any other ``--flag`` is a ``fedmm`` flag or in
  :data:`OTHER_TOOLS`, with the tool it belongs to;
* every ``[section].key`` / ``[section] key = ...`` / ``--set section.key=...`` names a field of
  :class:`fedmm.core.config.RunConfig`, every TOML block that is a fedmm config has only its
  sections and fields, and its ``[[techniques]]`` only installed techniques and their arguments;
* every row of an ``| argument | ...`` table in a package README is an argument of one of that
  package's techniques.
"""

from __future__ import annotations

import argparse
import inspect
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedmm.core.cli import make_parser
from fedmm.core.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted(ROOT.glob("packages/*/README.md")),
]

# Flags of other tools that the docs show, and which tool each belongs to (not checked here).
OTHER_TOOLS: dict[str, str] = {
    "--compile-bytecode": "uv sync (the CI's install, docs/benchmarks.md)",
    "--frozen": "uv sync",
    "--package": "uv run --package <dist> pytest",
    "--strict": "mkdocs build --strict (the docs site)",
    "--backend-store-uri": "mlflow ui (viewing a run's MLflow file store)",
    "--stream": "flwr run (Flower's deployment engine, docs/flower.md)",
    "--run-config": "flwr run",
    "--node-config": "flower-supernode",
    "--superlink": "flower-supernode",
    "--root-certificates": "flower-supernode",
    "--auth-supernode-private-key": "flower-supernode",
    "--enable-supernode-auth": "flower-superlink",
    "--disable-runtime-dependency-installation": "flower-superlink / flower-supernode",
    "--ssl-ca-certfile": "flower-superlink",
    "--ssl-certfile": "flower-superlink",
    "--ssl-keyfile": "flower-superlink",
}
# Benchmark names the docs use as examples of one's own benchmark.
EXAMPLE_BENCHMARKS = {"my-bench"}  # packages/fedmm-core/README.md: registering a benchmark of your own
# Pages the docs site generates from the READMEs and the config schema (tools/docs_hooks.py).
GENERATED_PAGES = {"index.md", "configuration.md"} | {
    f"packages/{p.parent.name}.md" for p in ROOT.glob("packages/*/README.md")
}
REPO_PATH = re.compile(
    r"(?<![\w$./~<-])(?:\.\./)*((?:docs|packages|integration_tests|tools|\.ci)/[\w.*/+-]*)"
)
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
FEDMM_COMMAND = re.compile(r"\bfedmm\s+([a-z][\w-]*)")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Snippet:
    """A piece of a doc: a fenced block (``lang`` its language) or an inline code span (``lang`` None)."""

    path: Path
    line: int
    text: str
    lang: str | None

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _fence_free(text: str) -> str:
    """``text`` with every fenced block blanked out, line numbers kept."""
    return re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)


def snippets(path: Path, text: str | None = None) -> Iterator[Snippet]:
    text = path.read_text() if text is None else text
    for m in re.finditer(r"```([\w-]*)\n(.*?)```", text, flags=re.S):
        yield Snippet(path, text.count("\n", 0, m.start()) + 2, m.group(2), m.group(1) or "text")
    prose = _fence_free(text)
    for m in re.finditer(r"`([^`]+)`", prose):
        yield Snippet(path, prose.count("\n", 0, m.start()) + 1, m.group(1), None)


def command_lines(snippet: Snippet) -> Iterator[str]:
    """Shell-like lines of a snippet: a code span is one line, a block's ``\\`` continuations joined."""
    if snippet.lang is None:
        yield " ".join(snippet.text.split())
        return
    yield from re.sub(r"\\\n", " ", snippet.text).splitlines()


# -- what exists -----------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@cache
def fedmm_options() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """``(global options, {command: its options})`` of the ``fedmm`` CLI."""
    parser = make_parser()
    top = frozenset(s for a in parser._actions for s in a.option_strings)
    commands = {
        name: frozenset(s for a in sub._actions for s in a.option_strings)
        for name, sub in _subparsers(parser).items()
    }
    return top, commands


@cache
def config_fields() -> dict[str, frozenset[str] | None]:
    """Section → its field names (``None`` for ``techniques``, checked by technique)."""
    out: dict[str, frozenset[str] | None] = {}
    for name, field in RunConfig.model_fields.items():
        ann = field.annotation
        out[name] = (
            frozenset(ann.model_fields) if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        )
    return out


@cache
def techniques() -> dict[str, tuple[str, frozenset[str]]]:
    """Installed technique → (its module, the names of its constructor's arguments)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for ep in entry_points(group="fedmm.techniques"):
        cls = ep.load()
        params = inspect.signature(cls).parameters
        out[ep.name] = (ep.value.split(":")[0], frozenset(params))
    return out


@cache
def benchmarks() -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group="fedmm.benchmarks"))


@cache
def python_files() -> frozenset[str]:
    return frozenset(
        p.name for top in ("packages", "integration_tests", "tools") for p in (ROOT / top).rglob("*.py")
    )


# -- the checks (each returns its problems, so the self-tests below can show they fail) ------
def path_problems(path: Path, text: str | None = None) -> list[str]:
    text = path.read_text() if text is None else text
    problems = []
    prose = _fence_free(text)
    for m in LINK.finditer(prose):
        target = m.group(1).split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue  # an anchor on the page, or a URL
        resolved = (path.parent / target).resolve()
        in_docs = resolved.is_relative_to(ROOT / "docs")
        if resolved.exists() or (in_docs and str(resolved.relative_to(ROOT / "docs")) in GENERATED_PAGES):
            continue
        problems.append(
            f"{path.relative_to(ROOT)}:{prose.count(chr(10), 0, m.start()) + 1}: link to {target}"
        )
    for snip in snippets(path, text):
        for m in REPO_PATH.finditer(snip.text):
            name = m.group(1).rstrip(".,;:")
            if snip.text[m.end() : m.end() + 1] in ("<", "{", "…"):
                continue  # a placeholder such as docs/results/<name>.json
            found = any(ROOT.glob(name)) if "*" in name else (ROOT / name).exists()
            if not found:
                problems.append(f"{snip.where()}: {name} does not exist")
        if snip.lang is None and re.fullmatch(r"[\w-]+\.py", snip.text) and snip.text not in python_files():
            problems.append(f"{snip.where()}: no file {snip.text} in the repository")
    return problems


def flag_problems(path: Path, text: str | None = None) -> list[str]:
    top, commands = fedmm_options()
    every = top.union(*commands.values())
    problems = []
    for snip in snippets(path, text):
        for line in command_lines(snip):
            command = FEDMM_COMMAND.search(line)
            start = len(line)
            if command:
                name = command.group(1)
                start = command.end()
                if name not in commands:
                    problems.append(f"{snip.where()}: `fedmm {name}` is not a fedmm command")
                else:
                    after = line[start:].split()
                    named = after[0] if after and re.fullmatch(r"[a-z][a-z0-9-]*", after[0]) else None
                    known = {"list", *EXAMPLE_BENCHMARKS, *benchmarks()}
                    if name == "bench" and named and named not in known:
                        problems.append(f"{snip.where()}: `fedmm bench {named}`: no such benchmark")
                    for flag in FLAG.findall(line[start:]):
                        if flag not in commands[name] | top:
                            problems.append(f"{snip.where()}: `fedmm {name}` has no option {flag}")
            for flag in FLAG.findall(line[:start]):
                if flag not in every and flag not in OTHER_TOOLS:
                    problems.append(f"{snip.where()}: {flag} is no fedmm option (nor listed in OTHER_TOOLS)")
    return problems


def _key_problem(section: str, key: str) -> str | None:
    fields = config_fields()
    if section not in fields:
        return f"[{section}] is not a config section ({', '.join(fields)})"
    known = fields[section]
    if known is not None and key not in known:
        return f"[{section}].{key} is not a field of [{section}]"
    return None


def _toml_problems(block: str) -> list[str]:
    try:
        table = tomllib.loads(block)
    except tomllib.TOMLDecodeError as exc:
        return [f"TOML block does not parse: {exc}"]
    sections = config_fields()
    if not set(table) & set(sections):
        return []  # not a fedmm config (e.g. Flower's own config.toml)
    problems = []
    for section, body in table.items():
        if section == "techniques":
            for entry in body:
                name = entry.get("name")
                if name not in techniques():
                    problems.append(f"[[techniques]] name = {name!r} is not an installed technique")
                    continue
                for key in set(entry) - {"name"} - techniques()[name][1]:
                    problems.append(f"[[techniques]] {name}: {key!r} is not an argument")
        elif not isinstance(body, dict):
            problems.append(f"{section} is not a config section")
        else:
            problems += [p for key in body if (p := _key_problem(section, key))]
    return problems


def config_problems(path: Path, text: str | None = None) -> list[str]:
    text = path.read_text() if text is None else text
    problems = []
    for snip in snippets(path, text):
        if snip.lang == "toml":
            problems += [f"{snip.where()}: {p}" for p in _toml_problems(snip.text)]
            continue
        if snip.lang is not None and snip.lang not in ("bash", "sh", "text", "console"):
            continue  # Python and the like: brackets there are indexing
        found = re.findall(r"(?<![\w\]])\[([a-z_]+)\]\.([a-z_]+)", snip.text)
        found += re.findall(r"(?<![\w\]])\[([a-z_]+)\] +([a-z_]+) *=", snip.text)
        found += [
            (s, k) for s, k in re.findall(r"--set ([a-z_]+)\.([a-z_]+)=", snip.text) if s != "techniques"
        ]
        problems += [f"{snip.where()}: {p}" for s, k in found if (p := _key_problem(s, k))]
    return problems


def argument_table_problems(path: Path, text: str | None = None) -> list[str]:
    """Rows of ``| argument | ...`` tables in a package README name arguments of its techniques."""
    text = path.read_text() if text is None else text
    if path.parent.parent != ROOT / "packages":
        return []
    module = "fedmm." + path.parent.name.removeprefix("fedmm-")
    known = set().union(*(args for mod, args in techniques().values() if mod.startswith(module)))
    problems = []
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and cells[0] == "argument":
            in_table = True
        elif not cells:
            in_table = False
        elif in_table and not set(cells[0]) <= {"-"}:
            for name in re.findall(r"`([^`]+)`", cells[0]):
                if name not in known:
                    problems.append(
                        f"{path.relative_to(ROOT)}:{number}: argument `{name}` is not one of {module}'s"
                    )
    return problems


CHECKS = {
    "paths": path_problems,
    "flags": flag_problems,
    "config": config_problems,
    "arguments": argument_table_problems,
}


@pytest.mark.parametrize("check", CHECKS)
def test_the_docs_name_only_what_exists(check: str) -> None:
    problems = [p for doc in DOCS for p in CHECKS[check](doc)]
    assert not problems, "\n".join(problems)


# -- each check can fail ---------------------------------------------------------------------
FAKE = ROOT / "docs" / "fake.md"
FAKE_README = ROOT / "packages" / "fedmm-select" / "README.md"


@pytest.mark.parametrize(
    ("check", "text", "found"),
    [
        ("paths", "See [x](nowhere.md).", "link to nowhere.md"),
        ("paths", "Run `docs/examples/missing.toml`.", "docs/examples/missing.toml does not exist"),
        ("paths", "```bash\nfedmm run docs/examples/gone.toml\n```\n", "docs/examples/gone.toml"),
        ("paths", "In `nosuchmodule.py`.", "no file nosuchmodule.py"),
        ("flags", "`fedmm run x.toml --no-such-flag`", "`fedmm run` has no option --no-such-flag"),
        ("flags", "`fedmm bench --rounds 3`", "`fedmm bench` has no option --rounds"),
        ("flags", "`fedmm frobnicate`", "not a fedmm command"),
        ("flags", "`fedmm bench no-such-bench --quick`", "no such benchmark"),
        ("flags", "Pass `--modalities`.", "--modalities is no fedmm option"),
        ("config", "Set `[strategy].lrr`.", "[strategy].lrr is not a field"),
        ("config", "`[data] modality = [1]`", "[data].modality is not a field"),
        ("config", "`fedmm run c.toml --set strategy.learning_rate=1`", "[strategy].learning_rate"),
        ("config", '```toml\n[[techniques]]\nname = "fedmfs"\ngama = 2\n```\n', "'gama' is not an argument"),
        ("config", '```toml\n[[techniques]]\nname = "fedmsf"\n```\n', "not an installed technique"),
        (
            "config",
            "```toml\n[run]\nrounds = 1\n[stratgy]\nlr = 1\n```\n",
            "[stratgy] is not a config section",
        ),
    ],
)
def test_each_check_finds_what_is_missing(check: str, text: str, found: str) -> None:
    problems = CHECKS[check](FAKE, text)
    assert any(found in p for p in problems), problems


def test_argument_tables_are_checked() -> None:
    text = "| argument | default | meaning |\n|---|---|---|\n| `gamma` | 1 | x |\n| `gama` | 1 | typo |\n"
    problems = argument_table_problems(FAKE_README, text)
    assert len(problems) == 1 and "`gama`" in problems[0], problems


def test_what_exists_is_accepted() -> None:
    text = (
        "[Arch](architecture.md), [config](configuration.md), `docs/results/`, `packages/*`,\n"
        "`fedmm run docs/examples/quickstart.toml --set strategy.lr=0.1 --resume --run-dir d`,\n"
        "`[run].rounds`, `[data] validation_fraction = 0.1`, `uv sync --frozen`,\n"
        "`fedmm bench fedmfs --quick`.\n"
        '```toml\n[data]\nname = "hapt"\n[[techniques]]\nname = "fedmfs"\ngamma = 1\n```\n'
    )
    assert [p for check in CHECKS.values() for p in check(FAKE, text)] == []


def _docs_hooks():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_inline_figure_is_rendered_or_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = _docs_hooks()
    record = {"seeds": [0, 1], "steps_image+audio": 4.5, "steps_image+audio_ci95": 0.5}
    (tmp_path / "demo-quick.json").write_text(__import__("json").dumps(record))
    monkeypatch.setattr(hooks, "RESULTS", tmp_path)
    # A key with '+' (a combination of modalities) is a key like any other.
    rendered = hooks.render_results("joint steps: {{ demo-quick.steps_image+audio }}.")
    assert "{{" not in rendered and "4.5" in rendered, rendered
    # A figure the pattern cannot read must fail the build, not reach the page as raw braces.
    with pytest.raises(ValueError, match="demo-quick"):
        hooks.render_results("{{ demo-quick.steps image }}")
