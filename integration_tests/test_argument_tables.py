"""Argument tables and the config schema come from the techniques' declared arguments.

* every package README's marked table is the one ``tools/argument_tables.py`` generates (a
  changed argument without a regenerated README fails here, in under a second);
* every installed technique of a technique package declares its arguments and has a table in its
  package README;
* the run config's JSON schema carries each technique's arguments, so an editor refuses a misspelt
  argument as ``build_technique`` does.
"""

from __future__ import annotations

import importlib.util
import inspect
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedmm.core.config import json_schema, technique_arguments, technique_classes

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("argument_tables", ROOT / "tools" / "argument_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_readme_tables_are_the_generated_ones() -> None:
    stale = [str(p.relative_to(ROOT)) for p in _tool().stale()]
    assert not stale, f"regenerate with `python tools/argument_tables.py`: {stale}"


def test_a_changed_table_is_found_and_rewritten() -> None:
    tool = _tool()
    text = "x\n<!-- begin arguments: fedmfs -->\n| argument |\n| `gama` |\n<!-- end arguments -->\ny\n"
    out = tool.render(text)
    assert out != text and "| `gamma` |" in out and "`gama`" not in out
    assert tool.render(out) == out  # generated once, stable
    with pytest.raises(ValueError, match="no installed technique 'fedmsf'"):
        tool.render("<!-- begin arguments: fedmsf -->\n<!-- end arguments -->")


def test_every_registered_technique_declares_its_arguments_and_has_a_readme_table() -> None:
    declared = technique_arguments()
    for name, ep in technique_classes().items():
        assert name in declared, f"{name}: no declared Arguments"
        cls = ep.load()
        assert list(inspect.signature(cls).parameters) == list(declared[name].model_fields)
        dist = ep.dist.name if ep.dist else ""
        readme = (ROOT / "packages" / dist / "README.md").read_text()
        assert f"<!-- begin arguments: {name} " in readme or f"<!-- begin arguments: {name}-->" in readme, (
            name
        )


def _valid(schema: dict[str, Any], config: dict[str, Any]) -> bool:
    jsonschema = pytest.importorskip("jsonschema")
    return bool(jsonschema.Draft202012Validator(schema).is_valid(config))


def test_the_schema_checks_each_techniques_arguments() -> None:
    schema = json_schema()
    table = {"data": {"name": "synthetic"}}
    assert _valid(schema, {**table, "techniques": [{"name": "fedmfs", "gamma": 2, "shapley": "exact"}]})
    assert not _valid(schema, {**table, "techniques": [{"name": "fedmfs", "gama": 2}]})
    assert not _valid(schema, {**table, "techniques": [{"name": "fedmfs", "gamma": 0}]})
    assert not _valid(schema, {**table, "techniques": [{"name": "bmsfed", "scale_free": "no"}]})
    # A technique installed without declared arguments: its constructor decides.
    assert _valid(schema, {**table, "techniques": [{"name": "someone_elses", "level": 3}]})


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_the_example_configs_fit_the_schema(path: Path) -> None:
    config = tomllib.loads(path.read_text())
    assert _valid(json_schema(), config), path.name
