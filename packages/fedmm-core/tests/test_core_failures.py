"""Runs that train nothing fail loudly, and what fedmm prints is readable (issue 15).

Every round skipped, or a round that lost every selected client to one cause, is a failed run:
``History.failure()`` says why, ``run_config`` raises ``RunFailedError`` after writing the run
folder, ``fedmm run`` exits 3 without a "final test accuracy". Messages go through logging, one
line per round; bars only on a terminal; ``-q`` silences every bar.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest

from fedmm.core import ClientContext, FedAvg, Federation, Technique, console
from fedmm.core.cli import main
from fedmm.core.config import parse_config
from fedmm.core.data.types import ClientData, FederatedDataset
from fedmm.core.engine import InProcessEngine, TrainOutcome, TrainRequest
from fedmm.core.errors import ConfigError, RunFailedError
from fedmm.core.failures import ClientDrop, run_failure
from fedmm.core.models import MultimodalModel
from fedmm.core.round import NOT_REPORTED

CONFIG = """
[run]
name = "tiny"
seed = 3
rounds = 3
output_dir = "{out}"

[data]
name = "synthetic"
clients = 6
partition = "iid"
options = {{ num_samples = 300, test_samples = 100 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}

[strategy]
clients_per_round = 3
{strategy}
"""


def _config(tmp_path: Path, strategy: str = "lr = 0.05") -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG.format(out=(tmp_path / "runs").as_posix(), strategy=strategy))
    return path


class Crash(Technique):
    """Every client of the chosen rounds raises, each with its own id in the message."""

    name = "crash"

    def __init__(self, rounds: set[int] | None = None) -> None:
        self.rounds = rounds

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        if self.rounds is None or cctx.round in self.rounds:
            raise RuntimeError(f"client {cctx.client_id}: completer returned 0 of {data.num_samples} samples")
        return data


class CrashEven(Technique):
    """Clients with an even id raise: half of every round is dropped, the rest trains."""

    name = "crash-even"

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        if cctx.client_id % 2 == 0:
            raise ValueError("bad batch")
        return data


def _fed(data: FederatedDataset, model: MultimodalModel, **strategy: Any) -> Federation:
    techniques = strategy.pop("techniques", [])
    return Federation(copy.deepcopy(model), data, FedAvg(techniques, clients_per_round=3, **strategy), seed=0)


# -- History.failure: which runs failed -------------------------------------------------------------
def test_a_diverged_run_fails_with_its_drops_by_cause(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    history = _fed(small_data, small_model, lr=float("inf")).run(2, progress=False)
    assert all(r["skipped"] and r["dropped"] == 3 for r in history.rounds)
    (cause,) = history.rounds[0]["drop_causes"]
    assert "UpdateError" in cause and "contains NaN or Inf" in cause
    assert history.rounds[0]["drop_causes"][cause]["count"] == 3
    failure = history.failure()
    assert failure is not None
    assert failure.startswith("the run trained nothing: all 2 rounds were skipped")
    assert "6 client(s) dropped:" in failure
    assert "6 in rounds 1-2, first client" in failure and "lower [strategy].lr" in failure


def test_min_clients_above_the_selection_fails_and_says_so(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    history = _fed(small_data, small_model, min_clients=4).run(2, progress=False)
    failure = history.failure()
    assert failure is not None and "all 2 rounds were skipped" in failure
    assert (
        "no client was dropped: the rounds selected at most 3 client(s), fewer than min_clients=4" in failure
    )


def test_min_clients_above_the_population_is_refused_before_any_round(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    # No selection can ever reach it: say so when the federation is built, not after every round.
    with pytest.raises(ConfigError, match=r"min_clients=10 .* only 6 clients"):
        _fed(small_data, small_model, min_clients=10)


def test_one_round_lost_to_one_cause_fails_the_run_even_if_later_rounds_train(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    history = _fed(small_data, small_model, techniques=[Crash({1})]).run(3, progress=False)
    assert [r["skipped"] for r in history.rounds] == [True, False, False]
    # Each client's message has its own numbers; they are one cause.
    (cause,) = history.rounds[0]["drop_causes"]
    assert cause == "RuntimeError: client N: completer returned N of N samples"
    failure = history.failure()
    assert failure is not None
    assert "every selected client of round 1 (3 of 3) was dropped for the same cause" in failure
    assert "3 in round 1, first client" in failure and "completer returned 0 of" in failure


def test_a_run_that_trained_is_not_a_failure(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    history = Federation(copy.deepcopy(small_model), small_data, FedAvg([CrashEven()]), seed=0).run(
        2, progress=False
    )
    assert all(r["dropped"] == 3 and not r["skipped"] for r in history.rounds)
    assert history.failure() is None
    healthy = _fed(small_data, small_model).run(2, progress=False)
    assert healthy.failure() is None and "drop_causes" not in healthy.rounds[0]


def test_mixed_causes_in_one_round_do_not_fail_a_run_that_trained() -> None:
    rows = [
        {
            "round": 1,
            "selected": 2,
            "dropped": 2,
            "skipped": True,
            "drop_causes": {"A": {"count": 1}, "B": {"count": 1}},
        },
        {"round": 2, "selected": 2, "dropped": 0, "skipped": False},
    ]
    assert run_failure(rows) is None
    assert run_failure(rows[:1]) is not None  # but every round skipped is
    # One client lost once is no pattern; two clients lost to one cause are.
    one = {"round": 1, "selected": 1, "dropped": 1, "skipped": True, "drop_causes": {"A": {"count": 1}}}
    assert run_failure([one, rows[1]]) is None
    two = {**one, "selected": 2, "dropped": 2, "drop_causes": {"A": {"count": 2}}}
    assert run_failure([two, rows[1]]) is not None


class _SilentEngine:
    """An engine that runs the first planned client and says nothing about the others."""

    def __init__(self, inner: InProcessEngine) -> None:
        self.inner = inner

    def train(self, request: TrainRequest) -> TrainOutcome:
        first = next(iter(request.plans))
        return self.inner.train(dataclasses.replace(request, plans={first: request.plans[first]}))


def test_clients_an_engine_says_nothing_about_are_dropped_with_that_cause(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = _fed(small_data, small_model)
    history = fed.run(1, progress=False, engine=_SilentEngine(fed.in_process_engine()))
    row = history.rounds[0]
    assert row["selected"] == 3 and row["dropped"] == 2 and row["skipped"] is False
    (cause,) = row["drop_causes"].values()
    assert cause["count"] == 2 and cause["error"] == NOT_REPORTED


def test_an_update_that_does_not_fit_is_dropped_on_every_engine(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    """The round, not the engine, checks updates: an engine returning a bad one loses that client."""

    class Corrupting(_SilentEngine):
        def train(self, request: TrainRequest) -> TrainOutcome:
            out = self.inner.train(request)
            bad = out.results[0]
            group = next(iter(bad.update))
            key = next(iter(bad.update[group]))
            update = {**bad.update, group: {**bad.update[group], key: bad.update[group][key][:1]}}
            return TrainOutcome((dataclasses.replace(bad, update=update), *out.results[1:]), out.drops)

    fed = _fed(small_data, small_model)
    row = fed.run(1, progress=False, engine=Corrupting(fed.in_process_engine())).rounds[0]
    assert row["dropped"] == 1
    (cause,) = row["drop_causes"].values()
    assert cause["error"].startswith("UpdateError:") and "differs from the global" in cause["error"]


def test_engine_must_be_an_engine(small_data: FederatedDataset, small_model: MultimodalModel) -> None:
    with pytest.raises(ConfigError, match="an Engine object"):
        _fed(small_data, small_model).run(1, progress=False, engine=object())  # type: ignore[arg-type]


def test_numbers_are_normalised_but_names_kept() -> None:
    drop = ClientDrop(4, "UpdateError: encoders.a.net.1.weight: shape (1, 2) differs from 0.5 in conv2")
    assert drop.cause == "UpdateError: encoders.a.net.1.weight: shape (N, N) differs from N in conv2"


# -- run_config and the CLI: non-zero exit, files first ---------------------------------------------
def test_cli_exits_3_for_a_run_that_trained_nothing_and_keeps_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = main(["run", str(_config(tmp_path, "lr = 1e38")), "--run-dir", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 3
    assert "final test accuracy" not in out
    assert "fedmm: error: the run trained nothing: all 3 rounds were skipped" in err
    assert "UpdateError" in err and f"its metrics and summary are written to {run_dir}" in err
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["dropped"] == 3 for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failure"].startswith("the run trained nothing")
    (cause,) = summary["drop_causes"].values()
    assert cause["count"] == 9 and cause["rounds"] == [1, 2, 3]

    code = main(["run", str(_config(tmp_path, "min_clients = 4")), "--run-dir", str(tmp_path / "r2"), "-q"])
    assert code == 3
    assert "fewer than min_clients=4" in capsys.readouterr().err
    code = main(["run", str(_config(tmp_path, "min_clients = 10")), "--run-dir", str(tmp_path / "r3"), "-q"])
    assert code == 2
    assert "[strategy].min_clients" in capsys.readouterr().err and not (tmp_path / "r3").exists()


def test_run_config_raises_after_writing(tmp_path: Path) -> None:
    from fedmm.core.config import load_config
    from fedmm.core.runner import run_config

    cfg = load_config(_config(tmp_path, "lr = 1e38"))
    with pytest.raises(RunFailedError) as info:
        run_config(cfg, tmp_path / "run", progress=False)
    assert info.value.run_dir == tmp_path / "run"
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "accuracy.png").exists()


def test_a_failed_seed_fails_the_run_after_the_others_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class OutOfMemory:
        def train(self, request: TrainRequest) -> TrainOutcome:
            return TrainOutcome(
                (), tuple(ClientDrop(c, "RuntimeError: out of memory") for c in request.plans)
            )

    real = Federation.in_process_engine

    def seed_1_breaks(self: Federation) -> Any:
        return OutOfMemory() if self.seed == 1 else real(self)

    monkeypatch.setattr(Federation, "in_process_engine", seed_1_breaks)
    run_dir = tmp_path / "seeds"
    code = main(["run", str(_config(tmp_path)), "--seeds", "0-2", "--run-dir", str(run_dir), "--rounds", "2"])
    out, err = capsys.readouterr()
    assert code == 3
    assert "1 of 3 seeds failed (seed 1); seed 1: the run trained nothing" in err
    assert "RuntimeError: out of memory" in err and "final test accuracy" not in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seeds"] == [0, 2] and list(summary["failed_seeds"]) == ["1"]
    assert all((run_dir / f"seed-{s}" / "metrics.jsonl").exists() for s in (0, 1, 2))


# -- the console --------------------------------------------------------------------------------------
def test_a_skipped_round_is_one_log_line_and_no_python_warning(
    small_data: FederatedDataset, small_model: MultimodalModel, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger="fedmm"):
        warnings.simplefilter("always")
        _fed(small_data, small_model, techniques=[Crash({1})]).run(1, progress=False)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warned] == [
        "round 1 skipped: 0 of 3 clients survived, fewer than min_clients=1; dropped: "
        "3 × RuntimeError: client N: completer returned N of N samples"
    ]
    # Each client's own line only at debug level (-v).
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 3 and all("dropped: RuntimeError: client" in m for m in debug)


def test_drops_in_a_round_that_goes_on_are_one_line(
    small_data: FederatedDataset, small_model: MultimodalModel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fedmm"):
        history = Federation(copy.deepcopy(small_model), small_data, FedAvg([CrashEven()]), seed=0).run(
            1, progress=False
        )
    assert history.rounds[0]["dropped"] == 3 and not history.rounds[0]["skipped"]
    assert [r.getMessage() for r in caplog.records] == [
        "round 1: 3 of 6 clients dropped: 3 × ValueError: bad batch"
    ]


def test_not_a_terminal_means_plain_lines_without_carriage_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(_config(tmp_path, "lr = 1e38")), "--run-dir", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert "round 3/3  accuracy" in err
    # Warnings are plain lines too: no levelname soup, no source path.
    assert "warning: round 1 skipped: 0 of 3 clients survived" in err and "RuntimeWarning" not in err


def test_quiet_draws_no_bar_even_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "interactive", lambda stream=None: True)  # as if stderr were a terminal
    cfg = str(_config(tmp_path))
    assert main(["run", cfg, "--run-dir", str(tmp_path / "loud"), "--rounds", "1"]) == 0
    assert "rounds: 100%" in capsys.readouterr().err  # the check can fail: bars do show here
    assert main(["run", cfg, "--run-dir", str(tmp_path / "quiet"), "--rounds", "1", "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "\r" not in out
    assert "final test accuracy" in out


def test_quiet_reaches_the_dataset_loader_and_techniques(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmm.core import config
    from fedmm.core.data import registry
    from fedmm.core.data.synthetic import make_synthetic
    from fedmm.core.runner import build_dataset, build_strategy

    seen: list[Any] = []

    def loader(progress: bool = True, **options: Any) -> Any:
        seen.append(progress)
        return make_synthetic(num_samples=200, test_samples=50)

    monkeypatch.setitem(registry.BUILTIN, "slow", registry.DatasetInfo("slow", "x:y", "a loader with bars"))
    monkeypatch.setattr(registry, "_resolve", lambda target: loader)

    class Chatty(Technique):
        name = "chatty"

        def __init__(self, progress: bool = True) -> None:
            self.progress = progress

    class EntryPoint:
        def load(self) -> type[Technique]:
            return Chatty

    monkeypatch.setattr(config, "technique_classes", lambda: {"chatty": EntryPoint()})
    cfg = parse_config({"data": {"name": "slow", "clients": 2}, "techniques": [{"name": "chatty"}]})
    build_dataset(cfg, progress=False)
    build_dataset(cfg)
    assert seen == [False, True]
    assert build_strategy(cfg, progress=False).techniques[0].progress is False
    assert build_strategy(cfg).techniques[0].progress is True
