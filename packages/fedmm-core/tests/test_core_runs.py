"""Multi-seed runs, `fedmm compare` over them, and `--set` overrides, on tiny synthetic runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from fedmm.core.cli import main
from fedmm.core.config import load_config, override_config, parse_config, parse_value
from fedmm.core.errors import ConfigError
from fedmm.core.plots import draw_compare, mean_curve
from fedmm.core.runner import compare_runs, run_config_seeds

TINY = """
[run]
name = "tiny"
seed = 7
rounds = 2
output_dir = "{out}"

[data]
name = "synthetic"
clients = 4
partition = "dirichlet"
alpha = 1.0
options = {{ num_samples = 240, test_samples = 120 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}
embed_dim = 8
hidden = 8

[strategy]
clients_per_round = 2
lr = 0.1
"""


def _write(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text.format(out=tmp_path / "runs"))
    return path


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _t_half_width(values: list[float]) -> float:
    """The 95 % t-interval half-width, computed here independently of fedmm.core.stats."""
    low, high = stats.t.interval(0.95, len(values) - 1, loc=0.0, scale=stats.sem(values))
    return float(high - low) / 2


# Scores of a run that depend only on the seed (not on timing).
SCORES = ("accuracy", "loss", "f1_macro", "train_loss", "ledger/bytes_up", "ledger/flops")


def test_seeds_run_into_seed_folders_with_an_aggregate_summary_then_resume_and_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path)
    multi = tmp_path / "multi"
    assert main(["run", str(cfg), "--seeds", "0,2,5", "--run-dir", str(multi), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {multi}" in out and "(mean ± 95 % CI over 3 seeds)" in out

    # Each seed folder is a complete run folder whose [run].seed is that seed.
    for seed in (0, 2, 5):
        folder = multi / f"seed-{seed}"
        for name in ("config.json", "metrics.jsonl", "summary.json", "accuracy.png", "checkpoint"):
            assert (folder / name).exists(), (seed, name)
        assert json.loads((folder / "config.json").read_text())["run"]["seed"] == seed
        assert [r["round"] for r in _rows(folder)] == [1, 2]

    # The seed folder is exactly the plain run of that seed.
    plain = tmp_path / "plain"
    assert main(["run", str(cfg), "--set", "run.seed=2", "--run-dir", str(plain), "-q"]) == 0
    for got, want in zip(_rows(multi / "seed-2"), _rows(plain), strict=True):
        assert {k: got[k] for k in SCORES} == {k: want[k] for k in SCORES}
    # ... and seeds differ (partition, initial weights, sampling).
    assert len({_rows(multi / f"seed-{s}")[-1]["train_loss"] for s in (0, 2, 5)}) == 3

    summary = json.loads((multi / "summary.json").read_text())
    assert summary["seeds"] == [0, 2, 5] and summary["seed_dirs"] == ["seed-0", "seed-2", "seed-5"]
    finals = [_rows(multi / f"seed-{s}")[-1]["accuracy"] for s in (0, 2, 5)]
    acc = summary["final"]["accuracy"]
    assert acc["per_seed"] == finals and acc["seeds"] == [0, 2, 5]
    assert acc["mean"] == pytest.approx(sum(finals) / 3)
    assert acc["ci95"] == pytest.approx(_t_half_width(finals))
    assert "round" not in summary["final"] and not any(k.startswith("ledger/") for k in summary["final"])
    assert {"loss", "f1_macro", "accuracy/a", "accuracy/b"} <= set(summary["final"])
    ups = [
        json.loads((multi / f"seed-{s}" / "summary.json").read_text())["ledger_totals"]["bytes_up"]
        for s in (0, 2, 5)
    ]
    assert summary["ledger_totals"]["bytes_up"]["per_seed"] == ups
    assert summary["best_accuracy"]["per_seed"] == [
        max(r["accuracy"] for r in _rows(multi / f"seed-{s}")) for s in (0, 2, 5)
    ]
    assert (multi / "accuracy.png").exists()

    # --resume --seeds continues every seed folder from its checkpoint (here: one more round).
    assert (
        main(
            ["run", str(cfg), "--seeds", "0,2,5", "--run-dir", str(multi), "--resume", "--rounds", "3", "-q"]
        )
        == 0
    )
    for seed in (0, 2, 5):
        rows = _rows(multi / f"seed-{seed}")
        assert [r["round"] for r in rows] == [1, 2, 3]
        assert rows[1]["accuracy"] == finals[[0, 2, 5].index(seed)]  # earlier rounds are kept
    resumed = json.loads((multi / "summary.json").read_text())
    assert resumed["rounds"] == [3, 3, 3]
    assert resumed["final"]["accuracy"]["per_seed"] == [
        _rows(multi / f"seed-{s}")[-1]["accuracy"] for s in (0, 2, 5)
    ]
    # Resuming the multi-seed folder without --seeds says how to resume it.
    capsys.readouterr()
    assert main(["run", str(cfg), "--run-dir", str(multi), "--resume", "-q"]) == 2
    assert "is a multi-seed run folder; resume it with --seeds" in capsys.readouterr().err

    # compare: a multi-seed folder (mean ± CI) next to a plain one (no CI), from Python ...
    multi_line, plain_line = compare_runs([multi, plain])
    finals3 = resumed["final"]["accuracy"]["per_seed"]
    assert multi_line.seeds == (0, 2, 5) and multi_line.rounds == (3, 3, 3)
    assert multi_line.final_accuracy == pytest.approx(sum(finals3) / 3)
    assert multi_line.final_accuracy_ci95 == pytest.approx(_t_half_width(finals3))
    assert multi_line.best_accuracy_ci95 is not None
    assert plain_line.seeds == () and plain_line.final_accuracy == _rows(plain)[-1]["accuracy"]
    assert plain_line.final_accuracy_ci95 is None and plain_line.best_accuracy_ci95 is None
    # ... and from the command line.
    png = tmp_path / "cmp.png"
    assert main(["compare", str(multi), str(plain), "-o", str(png)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()}
    assert f"{multi_line.final_accuracy:.4f} ± {multi_line.final_accuracy_ci95:.4f}" in lines["multi"]
    assert lines["multi"].split()[1:3] == ["3", "3"]  # seeds, rounds
    assert "±" not in lines["plain"] and f"{plain_line.final_accuracy:.4f}" in lines["plain"]
    assert png.exists()


def test_run_config_seeds_from_python(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path), ["run.rounds=1"])
    run_dir, summary = run_config_seeds(cfg, "3-4", tmp_path / "py", progress=False)
    assert run_dir == tmp_path / "py" and summary["seeds"] == [3, 4]
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    with pytest.raises(ConfigError, match="runs backwards"):
        run_config_seeds(cfg, "4-3", tmp_path / "bad")
    # A plain run folder is not turned into a multi-seed one.
    with pytest.raises(ConfigError, match="is a single-seed run folder"):
        run_config_seeds(cfg, [0], run_dir / "seed-3")


def test_one_seed_has_no_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one"
    assert (
        main(
            [
                "run",
                str(_write(tmp_path)),
                "--seeds",
                "9",
                "--set",
                "run.rounds=1",
                "--run-dir",
                str(one),
                "-q",
            ]
        )
        == 0
    )
    acc = json.loads((one / "summary.json").read_text())["final"]["accuracy"]
    assert acc["seeds"] == [9] and acc["ci95"] is None
    assert f"final test accuracy: {acc['mean']:.4f} (one seed: no interval)" in capsys.readouterr().out
    assert compare_runs([one])[0].final_accuracy_ci95 is None


def _fake_rows(accs: list[float], bytes_per_round: int = 2**20) -> list[dict[str, Any]]:
    return [
        {"round": i + 1, "accuracy": a, "ledger/bytes_up": bytes_per_round, "ledger/bytes_down": 0}
        for i, a in enumerate(accs)
    ]


def test_compare_plot_draws_the_mean_curve_with_a_95_band() -> None:
    seeds = [_fake_rows([0.2, 0.5, 0.6]), _fake_rows([0.4, 0.5, 0.8]), _fake_rows([0.3, 0.8, 0.7])]
    rounds, ys, half, mib = mean_curve(seeds)
    assert rounds == [1, 2, 3] and mib == [1.0, 2.0, 3.0]
    assert ys == pytest.approx([0.3, 0.6, 0.7])
    assert half == pytest.approx(
        [_t_half_width([0.2, 0.4, 0.3]), _t_half_width([0.5, 0.5, 0.8]), _t_half_width([0.6, 0.8, 0.7])]
    )

    fig = draw_compare({"multi": seeds, "plain": _fake_rows([0.1, 0.2])})
    try:
        by_round = fig.axes[0]
        lines = {line.get_label(): line for line in by_round.get_lines()}
        mean_line = lines["multi (mean of 3 seeds, 95 % CI)"]
        assert list(mean_line.get_xdata()) == [1, 2, 3]
        assert list(mean_line.get_ydata()) == pytest.approx([0.3, 0.6, 0.7])
        assert list(lines["plain"].get_ydata()) == [0.1, 0.2]
        (band,) = by_round.collections  # one shaded band: the multi-seed run's, none for the plain one
        ys_band = band.get_paths()[0].vertices[:, 1]
        assert max(ys_band) == pytest.approx(max(y + h for y, h in zip(ys, half, strict=True)))
        assert min(ys_band) == pytest.approx(min(y - h for y, h in zip(ys, half, strict=True)))
        assert len(fig.axes[1].collections) == 1  # the same band against cumulative bytes
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_a_band_covers_only_rounds_every_seed_evaluated() -> None:
    rounds, ys, _, _ = mean_curve([_fake_rows([0.2, 0.4, 0.6]), _fake_rows([0.4, 0.6])])
    assert rounds == [1, 2] and ys == pytest.approx([0.3, 0.5])
    _, _, one, _ = mean_curve([_fake_rows([0.2, 0.4])])
    assert one == [0.0, 0.0]  # a single seed has no interval


# -- --set overrides ----------------------------------------------------------------------------


def test_parse_value_reads_toml_and_falls_back_to_a_string() -> None:
    assert parse_value("0.1") == 0.1 and parse_value("3") == 3 and parse_value("true") is True
    assert parse_value('"x"') == "x" and parse_value("[1, 2]") == [1, 2]
    assert parse_value("{ a = 1 }") == {"a": 1}
    assert parse_value("hello world") == "hello world" and parse_value("cnn") == "cnn"
    assert parse_value("1\nx = 2") == "1\nx = 2"  # two keys are not one value


def test_overrides_set_nested_fields_and_techniques(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY + '\n[[techniques]]\nname = "fedmfs"\ngamma = 1\n')
    cfg = load_config(
        path,
        [
            "strategy.lr=0.2",
            "data.alpha=0.1",
            "run.name=sweep a",
            "data.options.num_samples=500",
            'model.encoders.a="cnn"',
            "techniques.0.gamma=2",
            "techniques.fedmfs.top_k=3",
            'run.trackers=["tensorboard"]',
        ],
    )
    assert cfg.strategy.lr == 0.2 and cfg.data.alpha == 0.1 and cfg.run.name == "sweep a"
    assert cfg.data.options == {"num_samples": 500, "test_samples": 120}
    assert cfg.model.encoders == {"a": "cnn", "b": "mlp"}
    assert cfg.techniques[0].arguments() == {"gamma": 2, "top_k": 3}
    assert cfg.run.trackers == ["tensorboard"]
    assert load_config(path).strategy.lr == 0.1  # the file is unchanged

    with pytest.raises(
        ConfigError,
        match=r"no \[\[techniques\]\] table '1'; the config has 1 \(by index 0-0 or by name: fedmfs\)",
    ):
        override_config(cfg, ["techniques.1.gamma=2"])
    with pytest.raises(ConfigError, match="give clients_per_round or fraction, not both"):
        override_config(cfg, ["strategy.fraction=0.5"])
    # Several bad values: each is named with its --set.
    with pytest.raises(ConfigError) as info:
        override_config(cfg, ["data.alpha=0", "strategy.lr=-1"])
    assert str(info.value) == (
        "--set data.alpha=0: [data].alpha: Input should be greater than 0 (got 0); "
        "--set strategy.lr=-1: [strategy].lr: Input should be greater than 0 (got -1)"
    )


def test_overrides_may_complete_a_file_and_a_bad_file_stays_the_files_error(tmp_path: Path) -> None:
    path = _write(tmp_path, TINY.replace("lr = 0.1", "lr = -3"))
    assert load_config(path, ["strategy.lr=0.1"]).strategy.lr == 0.1  # the override replaces it
    with pytest.raises(
        ConfigError, match=r"(?s)tiny.toml: invalid configuration \(1 problem\(s\)\):\n  - \[strategy\].lr"
    ):
        load_config(path, ["data.alpha=0.2"])
    no_data = tmp_path / "no_data.toml"
    no_data.write_text("[run]\nrounds = 1\n")
    assert load_config(no_data, ['data.name="synthetic"']).data.name == "synthetic"
    with pytest.raises(ConfigError) as info:
        load_config(no_data, ["data.alpha=0"])
    assert str(info.value) == (
        f"{no_data}: [data].name: required field is missing; "
        "--set data.alpha=0: [data].alpha: Input should be greater than 0 (got 0)"
    )


def test_overrides_from_the_command_line_reach_the_run(tmp_path: Path) -> None:
    cfg = _write(tmp_path)
    run_dir = tmp_path / "set"
    assert (
        main(
            [
                "run",
                str(cfg),
                "--set",
                "strategy.lr=0.3",
                "--set",
                "run.rounds=1",
                "--run-dir",
                str(run_dir),
                "-q",
            ]
        )
        == 0
    )
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["strategy"]["lr"] == 0.3 and saved["run"]["rounds"] == 1
    assert len(_rows(run_dir)) == 1
    assert math.isfinite(_rows(run_dir)[0]["accuracy"])


def test_parse_config_and_override_agree_with_the_file() -> None:
    # Overriding a field with the value the file would hold gives the same config.
    base = parse_config({"data": {"name": "synthetic"}})
    assert override_config(base, ["strategy.momentum=0.9"]) == parse_config(
        {"data": {"name": "synthetic"}, "strategy": {"momentum": 0.9}}
    )
