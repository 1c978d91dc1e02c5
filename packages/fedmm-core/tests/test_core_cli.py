"""Config validation and the ``fedmm`` command line, end to end on small synthetic runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmm.core.cli import main
from fedmm.core.config import load_config, parse_config
from fedmm.core.errors import ConfigError

SMALL = """
[run]
name = "tiny"
seed = 3
rounds = 3
output_dir = "{out}"
checkpoint_every = 1

[data]
name = "synthetic"
clients = 6
partition = "dirichlet"
alpha = 1.0
missing_rate = 0.2
options = {{ num_samples = 600, test_samples = 200 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}

[strategy]
clients_per_round = 3
lr = 0.05
momentum = 0.9
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text.format(out=tmp_path / "runs"))
    return path


def test_bad_fields_get_one_message_each() -> None:
    raw = {
        "data": {"name": "synthetic", "alpha": -1, "partiton": "iid"},
        "strategy": {"lr": 0, "optimizer": "rmsprop"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "cfg.toml")
    msg = str(info.value)
    assert "4 problem(s)" in msg
    assert "[data].alpha: Input should be greater than 0 (got -1)" in msg
    assert "[data].partiton: unknown field" in msg
    assert "[strategy].lr" in msg and "[strategy].optimizer" in msg


def test_missing_required_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[data\]: required field is missing"):
        parse_config({}, "x")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nrounds = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_unknown_technique_without_a_catalog_lists_the_installed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Core knows no technique's package: with no catalog registered (fedmm-suite ships one, see
    # its tests; test_core_plugins registers a toy one) the message lists what is installed.
    from fedmm.core import catalog, config

    monkeypatch.setattr(config, "technique_classes", lambda: {"echo": None})
    monkeypatch.setattr(catalog, "entry_points", lambda group: [])
    cfg = _write(tmp_path, SMALL + '\n[[techniques]]\nname = "flexmod"\nbudget = 1\n')
    assert main(["run", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "technique 'flexmod' is not installed; installed techniques: echo" in err
    assert "Traceback" not in err


def test_run_writes_a_complete_run_folder_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, SMALL)
    run_dir = tmp_path / "run1"
    assert main(["run", str(cfg), "--run-dir", str(run_dir), "-q"]) == 0
    for name in ("config.json", "metrics.jsonl", "summary.json", "accuracy.png", "bytes_vs_accuracy.png"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "checkpoint" / "LATEST").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert {
        "accuracy",
        "loss",
        "f1_macro",
        "accuracy/a",
        "accuracy/b",
        "ledger/bytes_up",
        "ledger/flops",
    } <= set(rows[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["ledger_totals"]["bytes_up"] > 0

    # Resume to more rounds continues from round 3 and keeps the earlier rows.
    changed = tmp_path / "changed.toml"
    changed.write_text(cfg.read_text().replace("lr = 0.05", "lr = 0.01"))
    assert main(["run", str(changed), "--run-dir", str(run_dir), "--resume", "-q"]) == 2
    assert "config differs" in capsys.readouterr().err
    assert main(["run", str(cfg), "--run-dir", str(run_dir), "--resume", "--rounds", "4", "-q"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]

    # compare: table and overlay plot
    out = tmp_path / "cmp.png"
    assert main(["compare", str(run_dir), str(run_dir), "-o", str(out)]) == 0
    assert out.exists() and "final acc" in capsys.readouterr().out


def test_cli_errors_are_one_line_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["bench", "no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert main(["datasets", "build", "synthetic"]) == 2
    assert "nothing to build" in capsys.readouterr().err


def test_bench_and_datasets_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"core-overhead", "core-scale", "fedavg-av-digits", "fedavg-hapt"} <= set(names)
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "av-digits" in out and "hapt" in out and "uci-har" in out


def test_scale_bench_runs_and_reports_json() -> None:
    from fedmm.core.bench.scale import measure_scale

    result = measure_scale(clients=2_000, rounds=2)
    assert result["clients"] == 2_000 and result["peak_rss_mib"] > 0 and result["seconds_per_round"] > 0


def test_installed_techniques_are_found_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmm.core import Technique, config

    class Echo(Technique):
        name = "echo"

        def __init__(self, level: int = 1) -> None:
            self.level = level

    class FakeEntryPoint:
        name = "echo"

        def load(self) -> type[Technique]:
            return Echo

    monkeypatch.setattr(config, "technique_classes", lambda: {"echo": FakeEntryPoint()})
    cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "echo", "level": 3}]})
    technique = config.build_technique(cfg.techniques[0])
    assert isinstance(technique, Echo) and technique.level == 3
    bad = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "echo", "levle": 3}]})
    with pytest.raises(ConfigError, match=r"\(echo\).*levle"):
        config.build_technique(bad.techniques[0])


def test_a_technique_that_fails_to_import_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmm.core import config

    class Broken:
        name = "broken"

        def load(self) -> None:
            raise ImportError("No module named 'fedmm.nowhere'")

    monkeypatch.setattr(config, "technique_classes", lambda: {"broken": Broken()})
    cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "broken"}]})
    with pytest.raises(ConfigError, match="registered but failed to import"):
        config.build_technique(cfg.techniques[0])


def test_bench_plots_only_where_a_benchmark_draws_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "core-scale", "--quick", "--plots", "somewhere"]) == 2
    assert "draws no plots" in capsys.readouterr().err


# -- bad input to --seeds, --set and [run].trackers: one line, exit 2, before any training ----


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("a,b", "--seeds 'a,b': 'a' is not a seed (a whole number >= 0) or a range like 0-4"),
        ("5-2", "--seeds '5-2': the range '5-2' runs backwards; write 2-5"),
        ("", "--seeds is empty: give seeds like 0,1,2 or a range like 0-4"),
        ("-1", "--seeds '-1': '-1' is not a seed (a whole number >= 0) or a range like 0-4"),
    ],
)
def test_run_rejects_bad_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seeds: str, message: str
) -> None:
    cfg = _write(tmp_path, SMALL)
    assert main(["run", str(cfg), "--seeds", seeds, "--run-dir", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"fedmm: error: {message}\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "strategy.lrr=0.1",
            "--set strategy.lrr=0.1: [strategy] has no field 'lrr'; valid fields: batch_size, beta1, "
            "beta2, clients_per_round, fraction, local_epochs, lr, max_grad_norm, min_clients, momentum, "
            "name, optimizer, server_lr, server_momentum, tau, weight_decay",
        ),
        (
            "strat.lr=0.1",
            "--set strat.lr=0.1: unknown section 'strat'; valid sections: data, flower, model, run, "
            "strategy, techniques",
        ),
        (
            "strategy.lr=fast",
            "--set strategy.lr=fast: [strategy].lr: Input should be a valid number, unable to parse "
            "string as a number (got 'fast')",
        ),
        ("data.alpha=-1", "--set data.alpha=-1: [data].alpha: Input should be greater than 0 (got -1)"),
        ("strategy.lr", "--set 'strategy.lr': expected FIELD=VALUE, e.g. --set strategy.lr=0.1"),
        (
            "strategy.lr.x=1",
            "--set strategy.lr.x=1: strategy.lr is a single value, not a table; "
            "write --set strategy.lr=VALUE",
        ),
        (
            "techniques.0.gamma=2",
            "--set techniques.0.gamma=2: the config has no [[techniques]] table to change",
        ),
    ],
)
def test_run_rejects_bad_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, message: str
) -> None:
    cfg = _write(tmp_path, SMALL)
    assert main(["run", str(cfg), "--set", item, "--run-dir", str(tmp_path / "r"), "-q"]) == 2
    assert capsys.readouterr().err == f"fedmm: error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_run_rejects_an_unknown_tracker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, SMALL.replace("checkpoint_every = 1", 'trackers = ["wandb"]'))
    assert main(["run", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "[run].trackers.0: Input should be 'tensorboard' or 'mlflow' (got 'wandb')" in err
    assert main(["run", str(_write(tmp_path, SMALL)), "--set", 'run.trackers=["wandb"]', "-q"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "fedmm: error: --set run.trackers=[\"wandb\"]: [run].trackers.0: Input should be 'tensorboard' "
        "or 'mlflow' (got 'wandb')\n"
    )


@pytest.mark.parametrize(
    ("tracker", "module"), [("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")]
)
def test_run_names_the_extra_a_tracker_needs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tracker: str,
    module: str,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if not installed
    cfg = _write(tmp_path, SMALL.replace("checkpoint_every = 1", f'trackers = ["{tracker}"]'))
    for seeds in ([], ["--seeds", "0-1"]):
        assert main(["run", str(cfg), "--run-dir", str(tmp_path / "r"), "-q", *seeds]) == 2
        assert capsys.readouterr().err == (
            f"fedmm: error: the '{tracker}' tracker ([run].trackers) needs "
            f'{"MLflow" if tracker == "mlflow" else "TensorBoard"}: pip install "fedmm-core[{tracker}]"\n'
        )
        assert not (tmp_path / "r").exists()  # refused before any folder or training


def test_resume_needs_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, SMALL)
    assert main(["run", str(cfg), "--resume", "--seeds", "0-1", "-q"]) == 2
    assert (
        capsys.readouterr().err == "fedmm: error: --resume needs --run-dir DIR: the run folder to continue\n"
    )
