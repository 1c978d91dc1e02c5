"""A technique package joins with no edit in core: an installed distribution that registers a
technique (entry-point group ``fedmm.techniques``) runs from a config, and one that registers a
catalog (``fedmm.catalog``) tells a config naming an uninstalled technique what to install.

The toy distribution is written into a temporary folder as an installer would lay it out (a
module plus a ``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``); importlib.metadata
finds it once that folder is on ``sys.path``.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmm.core.catalog import install_hint, technique_catalog
from fedmm.core.cli import main

MODULE = "fedmm_toy_plugin"

TOY = """
from pathlib import Path
from typing import Any

from fedmm.core import Technique

CATALOG = Path(__file__).with_name("catalog.toml")


class Toy(Technique):
    name = "toy"

    def after_round(self, ctx: Any, metrics: dict[str, Any]) -> None:
        metrics["toy/round"] = ctx.round
"""

CATALOG = """
[packages.fedmm-toy-extras]
techniques = ["toy_pro"]
"""

ENTRY_POINTS = f"""
[fedmm.techniques]
toy = {MODULE}:Toy

[fedmm.catalog]
toy = {MODULE}:CATALOG
"""

CONFIG = """
[run]
rounds = 2
output_dir = "{out}"

[data]
name = "synthetic"
clients = 3
options = {{ num_samples = 120, test_samples = 60 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}

[strategy]
clients_per_round = 2

[[techniques]]
name = "{technique}"
"""


@pytest.fixture
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    (site / MODULE).mkdir(parents=True)
    (site / MODULE / "__init__.py").write_text(textwrap.dedent(TOY))
    (site / MODULE / "catalog.toml").write_text(CATALOG)
    dist = site / "fedmm_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fedmm-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import system's caches
    yield site
    sys.modules.pop(MODULE, None)


def _config(tmp_path: Path, technique: str) -> Path:
    path = tmp_path / f"{technique}.toml"
    path.write_text(CONFIG.format(out=tmp_path / "runs", technique=technique))
    return path


def test_a_technique_package_runs_from_a_config_with_no_core_edit(
    toy_installed: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, "toy")), "--run-dir", str(run_dir), "-q"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row.get("toy/round") for row in rows] == [1, 2]  # its after_round ran every round


def test_the_install_hint_comes_from_a_registered_catalog(
    toy_installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert technique_catalog()["toy_pro"] == ("fedmm-toy-extras",)
    assert main(["run", str(_config(tmp_path, "toy_pro")), "-q"]) == 2
    err = capsys.readouterr().err
    assert "technique 'toy_pro' is not installed" in err
    assert "it is provided by the package 'fedmm-toy-extras': pip install fedmm-toy-extras" in err
    assert "Traceback" not in err


def test_a_name_no_catalog_knows_lists_the_installed_techniques(toy_installed: Path) -> None:
    hint = install_hint("no_such_technique", ["toy", "echo"])
    assert hint == "installed techniques: echo, toy"


def test_a_malformed_catalog_is_skipped_with_a_warning_naming_it(
    toy_installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = toy_installed / MODULE / "catalog.toml"
    for text, problem in [
        ("[packages.fedmm-toy-extras\n", "not valid TOML"),
        ("[packages]\nfedmm-toy-extras = 1\n", "packages.fedmm-toy-extras must be a table"),
        ('techniques = ["toy_pro"]\n', "needs a [packages.<name>] table"),
        (
            '[packages.fedmm-toy-extras]\ntechniques = "toy_pro"\n',
            "[packages.fedmm-toy-extras].techniques must be a list of technique names",
        ),
    ]:
        bad.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fedmm"):
            assert "toy_pro" not in technique_catalog()
        assert f"{bad}: {problem}" in caplog.text, caplog.text
        assert install_hint("toy_pro", ["toy"]) == "installed techniques: toy"


def test_a_catalog_entry_point_that_is_not_a_path_is_skipped_with_a_warning(
    toy_installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dist = toy_installed / "fedmm_toy-0.1.dist-info" / "entry_points.txt"
    dist.write_text(ENTRY_POINTS.replace(f"{MODULE}:CATALOG", f"{MODULE}:Toy"))
    with caplog.at_level(logging.WARNING, logger="fedmm"):
        assert "toy_pro" not in technique_catalog()
    assert f"technique catalog 'toy' ({MODULE}:Toy) is a type, not the path of a catalog file" in caplog.text
