"""The experiment harness: seeds, means and intervals, arm budgets, paired timings, provenance."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fedmm.core.errors import ConfigError
from fedmm.core.experiment import (
    Benchmark,
    SeedRun,
    paired_timing,
    smoothed,
    time_to_target,
    unequal_budgets,
    with_provenance,
)
from fedmm.core.federation import History
from fedmm.core.ledger import ClientCost, Ledger
from fedmm.core.stats import ci95, parse_seeds, summarize_seeds


def test_parse_seeds_lists_ranges_and_mixes() -> None:
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds(" 7, 0-2 ") == (0, 1, 2, 7)
    assert parse_seeds([3, 1]) == (1, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b", "'a' is not a seed"),
        ("5-2", "runs backwards"),
        ("", "is empty"),
        ("-1", "'-1' is not a seed"),
        ("1,,2", "empty item"),
        ("1,1", "given twice"),
        ("0-5000", "more than"),
    ],
)
def test_parse_seeds_refuses_bad_input_with_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_seeds(text)


def test_ci95_is_the_student_t_half_width() -> None:
    # mean 2, sample sd 1, n 3: t(0.975, 2) = 4.302652729911275
    assert ci95([1.0, 2.0, 3.0]) == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert ci95([5.0]) is None
    assert ci95([1.0, float("nan")]) is None


def test_summarize_seeds_numbers_bools_and_other_values() -> None:
    out = summarize_seeds(
        [
            {"acc": 0.5, "ok": True, "name": "x", "counts": [1]},
            {"acc": 0.7, "ok": False, "name": "x", "counts": [2]},
        ],
        [3, 4],
    )
    assert out["seeds"] == [3, 4]
    assert out["acc"] == pytest.approx(0.6)
    assert out["acc_per_seed"] == [0.5, 0.7]
    assert out["acc_ci95"] == pytest.approx(ci95([0.5, 0.7]))
    assert out["ok"] == 0.5 and out["ok_per_seed"] == [True, False]
    assert out["name"] == "x" and "name_per_seed" not in out
    assert out["counts_per_seed"] == [[1], [2]] and "counts" not in out


def _history(steps: int, flops: int, rounds: int = 2, first_selected: int = 4) -> History:
    costs = [ClientCost(round=1, client_id=0, steps=steps, flops=flops)]
    rows = [
        {"round": r, "selected": first_selected if r == 1 else 2, "dropped": 0} for r in range(1, rounds + 1)
    ]
    return History(rows, Ledger(costs))


def _toy_seed(run: SeedRun) -> dict[str, Any]:
    run.arm("base", _history(100, 1000))
    # 'cheap' claims a FLOP saving; 'greedy' takes 20 % more steps; 'late' lacks the full first round.
    run.arm("cheap", _history(100, 500), claims=("flops",))
    run.arm("greedy", _history(120, 1000))
    run.arm("late", _history(100, 1000, first_selected=2))
    run.arm("other", _history(10, 10), group="elsewhere")
    return {"accuracy": 0.5 + 0.1 * run.seed, "reached": run.seed > 0}


def test_benchmark_runs_every_seed_and_reports_means_intervals_and_budgets() -> None:
    seen: list[tuple[int, str]] = []

    def per_seed(run: SeedRun) -> dict[str, Any]:
        seen.append((run.seed, run.mode))
        return _toy_seed(run)

    def finish(out: dict[str, Any]) -> None:
        out["target_met"] = out["accuracy"] >= 0.6

    bench = Benchmark("toy", per_seed, finish=finish, headline=("accuracy", "missing_key"))
    out = bench(quick=True, seeds="0-2")
    assert seen == [(0, "quick"), (1, "quick"), (2, "quick")]
    assert out["seeds"] == [0, 1, 2] and out["mode"] == "quick" and out["quick"] is True
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["accuracy_per_seed"] == pytest.approx([0.5, 0.6, 0.7])
    assert out["accuracy_ci95"] == pytest.approx(ci95([0.5, 0.6, 0.7]))
    assert out["reached"] == pytest.approx(2 / 3)
    assert out["target_met"] is True
    assert out["headline"] == ["accuracy"]
    assert out["steps_greedy"] == 120 and out["flops_cheap"] == 500 and out["clients_round1_late"] == 2
    flagged = {(u["arm"], u["measure"]) for u in out["unequal_budget"]}
    # The claimed FLOP saving is not flagged; extra steps and a missing first round are; an arm of
    # another group is compared only within its group.
    assert flagged == {("greedy", "steps"), ("late", "clients_round1")}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_a_claimed_measure_is_still_flagged_when_the_arm_spends_more() -> None:
    info = {"a": SeedRun(0, "quick")}
    run = info["a"]
    run.arm("base", _history(100, 1000))
    run.arm("method", _history(100, 2000), claims=("flops",))
    record = dict(run.budgets)
    flagged = unequal_budgets(record, run.arms)
    assert [(u["arm"], u["measure"]) for u in flagged] == [("method", "flops")]
    assert flagged[0]["ratio"] == pytest.approx(2.0)


def test_default_seeds_per_mode_and_bad_arguments() -> None:
    calls: list[int] = []
    bench = Benchmark("toy", lambda run: calls.append(run.seed) or {"x": 1.0}, quick_seeds=(0, 1, 2))
    assert bench(mode="smoke")["seeds"] == [0, 1]
    assert bench(quick=False)["seeds"] == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="is not a seed"):
        bench(seeds="x")
    with pytest.raises(ConfigError, match="draws no plots"):
        bench(mode="smoke", plots_dir="somewhere")


def test_non_finite_figures_become_null() -> None:
    out = Benchmark("toy", lambda run: {"x": float("nan"), "y": float("inf")})(mode="smoke")
    assert out["x"] is None and out["y"] is None and out["x_ci95"] is None
    json.dumps(out, allow_nan=False)


def test_time_to_target_uses_the_trailing_mean() -> None:
    costs = [10.0, 20.0, 30.0, 40.0, 50.0]
    # One lucky evaluation (0.9 at index 1) does not reach 0.79 on a 3-window mean.
    acc = [0.5, 0.9, 0.6, 0.85, 0.95]
    assert smoothed(acc, 3)[3] == pytest.approx((0.9 + 0.6 + 0.85) / 3)
    assert time_to_target(costs, acc, 0.79, window=3) == 50.0
    assert time_to_target(costs, acc, 0.99, window=3) is None
    assert time_to_target(costs, acc, 0.9, window=1) == 20.0


def test_paired_timing_interleaves_alternating_order_after_warm_up() -> None:
    order: list[str] = []

    def a() -> float:
        order.append("a")
        return 2.0

    def b() -> float:
        order.append("b")
        return 1.0

    out = paired_timing(a, b, pairs=4, warmup=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert out["ratio"] == 2.0 and out["ratio_min"] == 2.0 and out["ratio_max"] == 2.0
    assert out["a_seconds"] == [2.0] * 4 and out["pairs"] == 4


def test_provenance_names_command_commit_date_and_machine() -> None:
    out = with_provenance({"x": 1}, argv=["/usr/bin/fedmm", "bench", "toy", "--quick"])
    meta = out["meta"]
    assert meta["command"] == "fedmm bench toy --quick"
    assert meta["date"].endswith("Z")
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["torch"]
    assert meta["machine"]["device"] == "cpu"
    assert out["x"] == 1


def test_cli_bench_refuses_bad_seeds_and_a_folder_as_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedmm.core.cli import main

    for bad in ("a,b", "5-2", "", "-1"):
        assert main(["bench", "core-scale", "--smoke", "--seeds", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fedmm: error: --seeds") and "Traceback" not in err
    assert main(["bench", "core-scale", "--smoke", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["bench", "core-scale", "--smoke", "--quick"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_cli_bench_writes_the_record_with_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedmm.core.cli import main

    path = tmp_path / "results" / "core-scale-smoke.json"
    assert main(["bench", "core-scale", "--smoke", "--seeds", "0,1", "-q", "-o", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads(path.read_text())
    assert saved == printed
    assert saved["seeds"] == [0, 1] and saved["mode"] == "smoke"
    assert len(saved["seconds_per_round_per_seed"]) == 2
    assert saved["meta"]["command"].startswith("fedmm bench core-scale --smoke")


def test_a_stopped_benchmark_resumes_from_its_saved_seeds(tmp_path: Path) -> None:
    calls: list[int] = []
    fail_at: set[int] = {2}

    def per_seed(run: SeedRun) -> dict[str, Any]:
        calls.append(run.seed)
        if run.seed in fail_at:
            raise RuntimeError("killed")
        out = _toy_seed(run)
        out["nan"] = math.nan  # a diverged figure must aggregate the same after a resume
        out["pair"] = (1, 2)
        return out

    bench = Benchmark("toy", per_seed, protocol="7")
    folder = tmp_path / "toy-quick.seeds"
    with pytest.raises(RuntimeError, match="killed"):
        bench(quick=True, seeds="0-3", checkpoint=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["seed-0.json", "seed-1.json"]
    saved = json.loads((folder / "seed-0.json").read_text(), parse_constant=lambda c: c)
    assert saved["benchmark"] == "toy" and saved["protocol"] == "7" and saved["meta"]["git_commit"] != ""

    # Without --resume a folder of earlier seeds is refused, not reused or overwritten.
    with pytest.raises(ConfigError, match="pass --resume"):
        bench(quick=True, seeds="0-3", checkpoint=folder)
    fail_at.clear()
    calls.clear()
    out = bench(quick=True, seeds="0-3", checkpoint=folder, resume=True)
    assert calls == [2, 3]  # only the missing seeds ran
    assert out["resumed_seeds"] == [0, 1] and set(out["seed_meta"]) == {"0", "1", "2", "3"}
    fresh = Benchmark("toy", per_seed, protocol="7")(quick=True, seeds="0-3")
    for key in ("accuracy", "accuracy_per_seed", "accuracy_ci95", "reached", "steps_greedy"):
        assert out[key] == fresh[key], key
    assert out["unequal_budget"] == fresh["unequal_budget"]
    assert out["nan"] is None and out["pair"] == fresh["pair"] == [1, 2]


def test_resume_refuses_records_of_another_protocol_mode_or_a_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    Benchmark("toy", _toy_seed, protocol="1")(quick=True, seeds="0", checkpoint=folder)
    with pytest.raises(ConfigError, match="another benchmark, mode, protocol or data"):
        Benchmark("toy", _toy_seed, protocol="2")(quick=True, seeds="0", checkpoint=folder, resume=True)
    with pytest.raises(ConfigError, match="another benchmark, mode, protocol or data"):
        Benchmark("toy", _toy_seed, protocol="1")(mode="full", seeds="0", checkpoint=folder, resume=True)
    (folder / "seed-0.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a seed record"):
        Benchmark("toy", _toy_seed, protocol="1")(quick=True, seeds="0", checkpoint=folder, resume=True)
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        Benchmark("toy", _toy_seed)(quick=True, seeds="0", resume=True)


def test_cli_bench_resume_keeps_saved_seeds_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedmm.core.bench.scale import SCALE
    from fedmm.core.cli import main

    path = tmp_path / "core-scale-smoke.json"
    first = ["bench", "core-scale", "--smoke", "--seeds", "0", "-q", "-o", str(path)]
    assert main(first) == 0
    assert not path.with_suffix(".seeds").exists()  # the whole result is written: no leftovers
    # A run stopped after seed 0: its record is in the folder; --resume runs seed 1 only.
    folder = path.with_suffix(".seeds")
    SCALE(mode="smoke", seeds="0", checkpoint=folder)
    seed0 = json.loads((folder / "seed-0.json").read_text())["record"]
    path.unlink()
    capsys.readouterr()
    assert main(["bench", "core-scale", "--smoke", "--seeds", "0,1", "-q", "-o", str(path)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["bench", "core-scale", "--smoke", "--seeds", "0,1", "-q", "-o", str(path), "--resume"]) == 0
    out = json.loads(path.read_text())
    assert out["resumed_seeds"] == [0] and out["seeds"] == [0, 1]
    assert out["seconds_per_round_per_seed"][0] == seed0["seconds_per_round"]  # taken, not re-run
    assert not folder.exists()
    assert main(["bench", "core-scale", "--smoke", "--resume"]) == 2
    assert "-o FILE" in capsys.readouterr().err


ISOLATED_MODULE = """
import os
from fedmm.core.experiment import Benchmark

SEEN = []  # what earlier seeds left in this process


def _seed(run):
    SEEN.append(run.seed)
    return {"pid": os.getpid(), "seen_before": len(SEEN) - 1, "value": float(run.seed)}


ISOLATED = Benchmark("isolated-toy", _seed, isolate_seeds=True, protocol="1")
"""


@pytest.mark.integration  # five interpreters, each importing torch
def test_isolated_seeds_each_run_in_a_fresh_process_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import os
    import sys

    (tmp_path / "isolated_toy_bench.py").write_text(ISOLATED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    module = importlib.import_module("isolated_toy_bench")
    try:
        folder = tmp_path / "ck"
        out = module.ISOLATED(mode="smoke", seeds="0-2", checkpoint=folder)
        pids = out["pid_per_seed"]
        assert len(set(pids)) == 3 and os.getpid() not in pids  # one new process per seed
        assert out["seen_before"] == 0.0  # nothing left over from an earlier seed
        assert out["value_per_seed"] == [0.0, 1.0, 2.0] and module.SEEN == []
        # Resuming takes the saved seeds and runs only the new one, again in its own process.
        again = module.ISOLATED(mode="smoke", seeds="0-3", checkpoint=folder, resume=True)
        assert again["resumed_seeds"] == [0, 1, 2] and again["pid_per_seed"][:3] == pids
        # Without a checkpoint folder the records meet in a temporary one.
        assert module.ISOLATED(mode="smoke", seeds="5")["value"] == 5.0
    finally:
        sys.modules.pop("isolated_toy_bench", None)
