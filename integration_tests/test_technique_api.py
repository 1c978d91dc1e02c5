"""Technique packages use core only through its technique-author API (``fedmm.core.api``), and no
module imports another's private (underscore) names.

Read from the sources (ast), not by importing them, so a violation anywhere — a function body, a
``TYPE_CHECKING`` block — is found. Benchmarks (``bench.py``) are experiments, not techniques: they
may also use the experiment harness, datasets and engines of core.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fedmm.core.api as api

ROOT = Path(__file__).resolve().parents[1]
TECHNIQUE_PACKAGES = ("fedmm-select", "fedmm-schedule", "fedmm-layerwise", "fedmm-completion")
API = "fedmm.core.api"


def _sources(packages: tuple[str, ...] | None = None) -> Iterator[Path]:
    for pkg in sorted((ROOT / "packages").iterdir()):
        if packages is None or pkg.name in packages:
            yield from sorted((pkg / "src").rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) of every ``from fedmm... import name`` and ``import fedmm...``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedmm"):
            for alias in node.names:
                yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fedmm"):
                    yield node.lineno, alias.name, ""


def _private_uses(path: Path) -> Iterator[str]:
    """Underscore names taken from another fedmm module: imported, or read as ``module._name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedmm"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}"
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fedmm"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            yield f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}"


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for path in _sources() for use in _private_uses(path)]
    assert not found, "private names used across modules (make them public or move them):\n" + "\n".join(
        found
    )


@pytest.mark.parametrize("package", TECHNIQUE_PACKAGES)
def test_technique_modules_import_core_only_through_its_api(package: str) -> None:
    found = []
    for path in _sources((package,)):
        if path.name == "bench.py":
            continue
        for line, module, name in _imports(path):
            if module.startswith("fedmm.core") and module != API:
                what = f"from {module} import {name}" if name else f"import {module}"
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not found, f"import these from {API} instead (add them there if missing):\n" + "\n".join(found)


def test_the_api_exports_what_it_lists() -> None:
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert not missing
    assert len(set(api.__all__)) == len(api.__all__)
    # The round protocol is there under the names core uses.
    from fedmm.core.protocol import ResultsContext, Technique

    assert api.Technique is Technique and api.ResultsContext is ResultsContext
