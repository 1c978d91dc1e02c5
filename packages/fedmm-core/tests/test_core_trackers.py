"""`[run] trackers`: what TensorBoard and MLflow hold after a tiny run, read back with their own
readers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fedmm.core.cli import main
from fedmm.core.trackers import flatten, mlflow_key, round_metrics

TINY = """
[run]
name = "tracked"
seed = 1
rounds = 2
output_dir = "{out}"
trackers = ["tensorboard", "mlflow"]

[data]
name = "synthetic"
clients = 4
options = {{ num_samples = 240, test_samples = 120 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}
embed_dim = 8
hidden = 8

[strategy]
clients_per_round = 2
lr = 0.1
"""


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_round_metrics_and_flatten() -> None:
    row = {
        "round": 3,
        "accuracy": 0.5,
        "skipped": False,
        "loss": float("nan"),
        "note": "x",
        "ledger/flops": 7,
    }
    assert round_metrics(row) == {"accuracy": 0.5, "ledger/flops": 7.0}
    assert flatten(
        {"strategy": {"lr": 0.1}, "techniques": [{"name": "x", "k": 2}], "data": {"options": {}}}
    ) == {
        "strategy.lr": 0.1,
        "techniques.0.name": "x",
        "techniques.0.k": 2,
        "data.options": {},
    }
    assert (
        mlflow_key("accuracy/a") == "accuracy.a" and mlflow_key("fedmfs/shapley/a b") == "fedmfs.shapley.a b"
    )


def test_tensorboard_and_mlflow_get_every_round_and_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # the default MLflow store is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # Restored to its state before the test by monkeypatch (fedmm sets it for ./mlruns).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    cfg = tmp_path / "tracked.toml"
    cfg.write_text(TINY.format(out=tmp_path / "runs"))
    run_dir = tmp_path / "run"
    assert main(["run", str(cfg), "--run-dir", str(run_dir), "-q"]) == 0
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    rows = _rows(run_dir)

    # TensorBoard: one scalar per metric per round, the config as text.
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"accuracy", "loss", "accuracy/a", "ledger/bytes_up", "ledger/flops", "train_loss"} <= scalars
    assert "round" not in scalars and "skipped" not in scalars
    for key in ("accuracy", "ledger/bytes_up"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [1, 2]
        assert [v for _, v in logged] == pytest.approx([r[key] for r in rows], rel=1e-6)
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == json.loads(
        (run_dir / "config.json").read_text()
    )

    # MLflow: an experiment named after [run].name, one run named after the folder.
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["fedmm.run_dir"] == str(run_dir.resolve())
    for key in ("accuracy", "accuracy/b", "ledger/bytes_up"):
        history = sorted(client.get_metric_history(run.info.run_id, mlflow_key(key)), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["round"], pytest.approx(r[key])) for r in rows]
    params = run.data.params
    assert params["strategy.lr"] == "0.1" and params["run.name"] == "tracked"
    assert params["model.encoders.a"] == "mlp" and params["run.trackers"] == '["tensorboard", "mlflow"]'
    assert json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"] == run.info.run_id

    # --resume continues the same MLflow run and the same TensorBoard folder.
    assert main(["run", str(cfg), "--run-dir", str(run_dir), "--resume", "--rounds", "3", "-q"]) == 0
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("accuracy")] == [1, 2, 3]
    capsys.readouterr()


def test_a_run_that_fails_marks_its_mlflow_run_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from fedmm.core.federation import Federation

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store of the user's own choice
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")

    def boom(self: Federation, round_: int, engine: object = None) -> dict[str, Any]:
        raise RuntimeError("client crashed")

    monkeypatch.setattr(Federation, "run_round", boom)
    cfg = tmp_path / "tracked.toml"
    cfg.write_text(TINY.format(out=tmp_path / "runs").replace('"tensorboard", ', ""))
    with pytest.raises(RuntimeError, match="client crashed"):
        main(["run", str(cfg), "--run-dir", str(tmp_path / "run"), "-q"])
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert not (tmp_path / "mlruns").exists()  # MLFLOW_TRACKING_URI was used, not ./mlruns
