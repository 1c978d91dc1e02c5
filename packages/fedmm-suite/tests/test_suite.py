"""The suite installs every technique package and each registers what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmm.core.catalog import technique_catalog
from fedmm.core.cli import main
from fedmm.suite import EXPECTED, installed


def test_every_technique_of_the_suite_is_registered_by_its_package() -> None:
    found = installed()
    for package, names in EXPECTED.items():
        for name in names:
            assert found.get(name) == package, (name, found.get(name))


def test_every_package_registers_a_benchmark() -> None:
    providers = set(installed("fedmm.benchmarks").values())
    assert {"fedmm-core", *EXPECTED} <= providers


def test_the_suite_registers_its_catalog_for_the_install_hint() -> None:
    known = technique_catalog()
    for package, names in EXPECTED.items():
        for name in names:
            assert known.get(name) == (package,), (name, known.get(name))


def test_an_uninstalled_technique_names_its_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedmm.core import config

    monkeypatch.setattr(config, "technique_classes", dict)  # as if no technique package were installed
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[run]\noutput_dir = "{tmp_path}"\n\n[data]\nname = "synthetic"\n\n'
        '[[techniques]]\nname = "flexmod"\nbudget = 1\n'
    )
    assert main(["run", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "technique 'flexmod' is not installed; it is provided by the package 'fedmm-schedule'" in err
    assert "pip install fedmm-schedule" in err and "Traceback" not in err
