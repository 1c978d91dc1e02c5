"""Every registered benchmark reports through the harness: seeds, means, intervals, protocol.

Each runs in its smoke mode on two seeds (seconds per arm), so none can lack ``--seeds`` or
per-seed reporting; and docs/benchmarks.md shows only figures from committed result files.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from fedmm.core.cli import benchmarks, main
from fedmm.core.experiment import Benchmark

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(benchmarks())


def test_the_packages_register_every_benchmark() -> None:
    assert {
        "core-overhead",
        "core-scale",
        "engines",
        "fedavg-av-digits",
        "fedavg-hapt",
        "fedmfs",
        "bmsfed",
        "layerwise",
        "flexmod",
        "fedmvp",
    } <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_states_its_protocol(name: str) -> None:
    bench = benchmarks()[name].load()
    assert isinstance(bench, Benchmark)
    doc = (sys.modules[bench.run_seed.__module__].__doc__ or "").lower()
    for word in ("seed", "round", "target"):
        assert word in doc, f"{name}: the module docstring (its protocol) never mentions {word!r}"
    assert bench.headline, f"{name}: no headline keys for the docs"


@pytest.mark.integration  # every benchmark end to end (minutes; the engines one starts Flower)
@pytest.mark.parametrize("name", NAMES)
def test_benchmark_smoke_run_on_two_seeds(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", name, "--smoke", "--seeds", "0,1", "-q"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["seeds"] == [0, 1] and record["mode"] == "smoke"
    assert record["benchmark"] and record["protocol"]
    assert isinstance(record["unequal_budget"], list)
    assert record["headline"], "the smoke run produced none of the headline keys"
    for key in record["headline"]:
        per_seed = record.get(f"{key}_per_seed")
        assert per_seed is None or len(per_seed) == 2, key
    numeric = [k for k in record["headline"] if f"{k}_ci95" in record]
    assert numeric, "no headline figure carries a confidence interval"
    assert record["meta"]["machine"]["cores"] >= 1


def _hook_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_figures_come_from_committed_result_files() -> None:
    hooks = _hook_module()
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    shown = set(re.findall(r"<!-- results: ([a-z0-9-]+) -->", text))
    assert shown, "docs/benchmarks.md shows no result files"
    rendered = hooks.render_results(text)
    assert "<!-- results:" not in rendered and "{{" not in rendered
    files = sorted((ROOT / "docs" / "results").glob("*.json"))
    for path in files:
        record = json.loads(path.read_text())
        name, mode, protocol = hooks._parse_name(path)
        assert name in shown, f"{path.name} is not shown in docs/benchmarks.md"
        assert record["benchmark"] == name and record["mode"] == mode
        assert record["meta"]["git_commit"] and record["meta"]["command"].startswith("fedmm bench")
        assert len(record["seeds"]) >= 3 or mode == "smoke"
        if protocol:
            assert record.get("superseded"), f"{path.name}: a superseded result says why"


def test_docs_figures_may_come_from_a_superseded_protocols_file() -> None:
    # {{ NAME-<mode>.protocol<N>.KEY }}: prose about an earlier protocol cites its own file.
    hooks = _hook_module()
    record = json.loads((ROOT / "docs" / "results" / "layerwise-quick.protocol2.json").read_text())
    from fedmm.core.experiment import format_figure

    text = (
        "E2E / LW {{ layerwise-quick.protocol2.memory_reduction_max }}x, "
        "{{layerwise-full.protocol2.metric_lw}}"
    )
    rendered = hooks.render_results(text)
    assert "{{" not in rendered
    assert format_figure(record, "memory_reduction_max") in rendered
    with pytest.raises(ValueError, match=r"no result file docs/results/layerwise-quick\.protocol9\.json"):
        hooks.render_results("{{ layerwise-quick.protocol9.metric_lw }}")


def test_a_held_out_run_is_named_by_its_benchmark_and_mode() -> None:
    hooks = _hook_module()
    path = ROOT / "docs" / "results" / "bmsfed-quick.heldout.json"
    assert hooks._parse_name(path) == ("bmsfed", "quick", "")
    assert hooks._is_heldout(path) and not hooks._is_heldout(path.with_name("bmsfed-quick.json"))
    record = json.loads(path.read_text())
    assert not set(record["seeds"]) & {0, 1, 2, 3, 4}, "a held-out run uses no tuning seed"
    assert "held-out seeds" in hooks.render_results("<!-- results: bmsfed -->")
    assert "{{" not in hooks.render_results("{{ bmsfed-quick.heldout.weak_gain_vs_random }}")
