"""Workspace-level checks that hold whatever packages are installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_fedmm_is_a_namespace_package() -> None:
    # PEP 420: no fedmm/__init__.py in any member, so packages installed separately share `fedmm`.
    assert not list(ROOT.glob("packages/*/src/fedmm/__init__.py"))
    spec = importlib.util.find_spec("fedmm")
    assert spec is not None and spec.origin in (None, "namespace")


@pytest.mark.parametrize("member", sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir()))
def test_members_have_the_standard_layout(member: str) -> None:
    pkg = ROOT / "packages" / member
    for needed in ("pyproject.toml", "README.md", "tests"):
        assert (pkg / needed).exists(), f"{member} lacks {needed}"


def test_technique_packages_import_only_core() -> None:
    siblings = ("schedule", "select", "layerwise", "completion", "suite")
    for src in ROOT.glob("packages/fedmm-*/src/fedmm/*"):
        own = src.name
        for py in src.rglob("*.py"):
            text = py.read_text()
            for other in siblings:
                if other != own and own != "suite" and (f"fedmm.{other}" in text):
                    pytest.fail(f"{py} imports fedmm.{other}; technique packages may import only fedmm.core")


@pytest.mark.parametrize("example", sorted((ROOT / "docs" / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_validate(example: Path) -> None:
    from fedmm.core.config import load_config

    cfg = load_config(example)
    assert cfg.run.rounds >= 1
