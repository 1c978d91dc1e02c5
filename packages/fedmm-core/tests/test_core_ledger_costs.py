"""Every cost charged: the work of each client hook and each server phase lands in the ledger."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedmm.core import (
    ClientContext,
    ClientCost,
    ClientResult,
    FedAvg,
    Federation,
    RoundContext,
    ServerCost,
    Technique,
    TrainPlan,
)
from fedmm.core.arrays import GroupedArrays
from fedmm.core.data.types import Batch, ClientData, FederatedDataset
from fedmm.core.ledger import CLIENT_HOOKS, SERVER_PHASES, Ledger
from fedmm.core.models import MultimodalModel
from fedmm.core.models.model import ModelOutput

M, K, N = 16, 32, 8
MATMUL = 2 * M * K * N  # FlopCounterMode's count for an (M×K)·(K×N) matmul


def _matmul() -> torch.Tensor:
    return torch.ones(M, K) @ torch.ones(K, N)


class PrepareWork(Technique):
    name = "prepare_work"

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        _matmul()
        return data


class ReportWork(Technique):
    name = "report_work"

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        return {"report_work/sum": float(_matmul().sum())}


class UploadWork(Technique):
    name = "upload_work"

    def upload(
        self, cctx: ClientContext, report: Mapping[str, Any], groups: tuple[str, ...]
    ) -> tuple[str, ...]:
        _matmul()
        return groups


class LossTermWork(Technique):
    """A loss term whose forward is one constant-shape matmul (no gradient flows through it)."""

    name = "loss_term_work"

    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        return {"toy": 0.0 * _matmul().mean()}


class SelectWork(Technique):
    name = "select_work"

    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        _matmul()
        return candidates


class ConfigureWork(Technique):
    name = "configure_work"

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        _matmul()
        return plan


class AggregateWork(Technique):
    name = "aggregate_work"

    def aggregate(self, ctx: RoundContext, results: Sequence[ClientResult]) -> GroupedArrays | None:
        _matmul()
        return None  # core's FedAvg


class AfterRoundWork(Technique):
    name = "after_round_work"

    def after_round(self, ctx: RoundContext, metrics: dict[str, Any]) -> None:
        metrics["after_round_work/sum"] = float(_matmul().sum())


def _run(
    data: FederatedDataset, model: MultimodalModel, techniques: Sequence[Technique], rounds: int = 1
) -> Federation:
    fed = Federation(copy.deepcopy(model), data, FedAvg(techniques, clients_per_round=2), seed=0)
    fed.run(rounds, progress=False)
    return fed


# -- client hooks ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("technique", "hook"), [(PrepareWork(), "prepare"), (ReportWork(), "report"), (UploadWork(), "upload")]
)
def test_a_client_hook_outside_the_steps_is_charged_exactly(
    small_data: FederatedDataset, small_model: MultimodalModel, technique: Technique, hook: str
) -> None:
    fed = _run(small_data, small_model, [technique])
    records = fed.history.ledger.records
    assert len(records) == 2
    for rec in records:
        assert rec.flops_by_hook[hook] == MATMUL
        assert rec.seconds_by_hook[hook] > 0
        assert rec.flops_by_hook["train"] == rec.flops > 0
        assert rec.client_flops == rec.flops + MATMUL
        assert rec.client_seconds == pytest.approx(rec.seconds_by_hook["train"] + rec.seconds_by_hook[hook])
        assert rec.client_seconds <= rec.seconds
        assert set(rec.flops_by_hook) == {"train", hook}
    totals = fed.history.ledger.totals()
    assert totals[f"flops_by_hook/{hook}"] == 2 * MATMUL
    assert totals["client_flops"] == totals["flops"] + 2 * MATMUL


def test_loss_terms_are_charged_per_step_inside_train(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    # Two rounds: the second round's steps reuse the first's cached measurements.
    fed = _run(small_data, small_model, [LossTermWork()], rounds=2)
    plain = _run(small_data, small_model, [], rounds=2)
    assert {r.round for r in fed.history.ledger.records} == {1, 2}
    for rec, base in zip(fed.history.ledger.records, plain.history.ledger.records, strict=True):
        assert rec.steps == base.steps > 0
        assert rec.flops_by_hook["loss_terms"] == MATMUL * rec.steps
        # The terms' forward is part of the step's FLOPs, so it is counted once, in train.
        assert rec.flops == base.flops + MATMUL * rec.steps
        assert rec.client_flops == rec.flops
        assert 0 < rec.seconds_by_hook["loss_terms"] < rec.seconds_by_hook["train"]
        assert rec.client_seconds == pytest.approx(rec.seconds_by_hook["train"])
    # The cached step entry carries the terms' FLOPs.
    assert {entry[2] for entry in fed.meter.cache.values()} == {MATMUL}


def test_nothing_overridden_charges_no_hook_and_no_server_flops(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = _run(small_data, small_model, [], rounds=2)
    for rec in fed.history.ledger.records:
        assert set(rec.flops_by_hook) == set(rec.seconds_by_hook) == {"train"}
        assert rec.client_flops == rec.flops
    assert [s.round for s in fed.history.ledger.server] == [1, 2]
    for s in fed.history.ledger.server:
        assert s.flops_by_phase == {}  # default phases are timed, never put under the counter
        assert set(s.seconds_by_phase) == set(SERVER_PHASES)
        assert s.flops == 0 and s.seconds > 0 and s.eval_seconds > 0
    totals = fed.history.ledger.totals()
    assert totals["server_flops"] == 0
    for hook in ("prepare", "loss_terms", "report", "upload"):
        assert totals[f"flops_by_hook/{hook}"] == 0 and totals[f"seconds_by_hook/{hook}"] == 0


# -- server phases -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("technique", "phase", "per_round"),
    [
        (SelectWork(), "select_clients", MATMUL),
        (ConfigureWork(), "configure", 2 * MATMUL),  # once per planned client
        (AggregateWork(), "aggregate", MATMUL),
        (AfterRoundWork(), "after_round", MATMUL),
    ],
)
def test_a_server_phase_is_charged_exactly(
    small_data: FederatedDataset,
    small_model: MultimodalModel,
    technique: Technique,
    phase: str,
    per_round: int,
) -> None:
    fed = _run(small_data, small_model, [technique], rounds=2)
    ledger = fed.history.ledger
    for round_, server in enumerate(ledger.server, start=1):
        assert server.round == round_
        assert server.flops_by_phase == {phase: per_round}
        assert server.seconds_by_phase[phase] > 0
        assert server.flops == per_round
        assert server.seconds == pytest.approx(sum(server.seconds_by_phase.values()))
        row = fed.history.rounds[round_ - 1]
        assert row[f"ledger/server_flops/{phase}"] == row["ledger/server_flops"] == per_round
        assert row[f"ledger/server_seconds/{phase}"] == server.seconds_by_phase[phase]
        assert row["ledger/server_seconds"] == pytest.approx(server.seconds)
        # Evaluation is measurement, not the method's cost: kept apart from the server totals.
        assert row["ledger/eval_seconds"] == server.eval_seconds > 0
    assert ledger.totals()[f"server_flops/{phase}"] == 2 * per_round


def test_after_round_metrics_and_ledger_keys_both_reach_the_row(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = _run(small_data, small_model, [AfterRoundWork()])
    row = fed.history.rounds[0]
    assert row["after_round_work/sum"] == M * N * K
    assert row["ledger/server_flops/after_round"] == MATMUL


# -- totals, metrics.jsonl ---------------------------------------------------------------------
def test_totals_sum_clients_and_server_per_round() -> None:
    a = ClientCost(round=1, client_id=0, flops=10, peak_bytes=5, flops_by_hook={"train": 10, "report": 3})
    a.seconds_by_hook = {"train": 1.0, "report": 0.5}
    b = ClientCost(round=2, client_id=1, flops=20, peak_bytes=7, flops_by_hook={"train": 20, "loss_terms": 4})
    b.seconds_by_hook = {"train": 2.0, "loss_terms": 0.25}
    s1 = ServerCost(round=1, flops_by_phase={"after_round": 100}, seconds_by_phase={"after_round": 3.0})
    s1.eval_seconds = 9.0
    s2 = ServerCost(round=2, seconds_by_phase={"aggregate": 1.5})
    ledger = Ledger([a, b], [s1, s2])
    per_round = ledger.per_round()
    assert per_round[1] == ledger.round_totals(1)
    assert per_round[1]["client_flops"] == 13 and per_round[1]["client_seconds"] == 1.5
    assert per_round[1]["server_flops"] == 100 and per_round[1]["server_seconds"] == 3.0
    assert per_round[1]["eval_seconds"] == 9.0
    assert per_round[2]["client_flops"] == 20  # loss_terms is inside train
    assert per_round[2]["flops_by_hook/loss_terms"] == 4
    totals = ledger.totals()
    assert totals["flops"] == 30 and totals["client_flops"] == 33 and totals["peak_bytes"] == 7
    assert totals["flops_by_hook/report"] == 3 and totals["seconds_by_hook/report"] == 0.5
    assert totals["server_flops/after_round"] == 100 and totals["server_seconds/aggregate"] == 1.5
    assert totals["server_seconds"] == 4.5 and totals["eval_seconds"] == 9.0
    expected = {f"flops_by_hook/{h}" for h in CLIENT_HOOKS} | {f"server_flops/{p}" for p in SERVER_PHASES}
    assert expected <= set(Ledger().totals())  # the same columns every round, zero when unused


def test_metrics_jsonl_holds_the_ledger_keys(tmp_path: Path) -> None:
    from fedmm.core.config import parse_config
    from fedmm.core.runner import run_config

    raw = {
        "run": {"name": "costs", "seed": 0, "rounds": 2, "output_dir": str(tmp_path)},
        "data": {"name": "synthetic", "clients": 4, "options": {"num_samples": 200, "test_samples": 100}},
        "model": {"encoders": {"a": "mlp", "b": "mlp"}},
        "strategy": {"clients_per_round": 2},
    }
    run_dir, history = run_config(parse_config(raw), tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for row, round_ in zip(rows, (1, 2), strict=True):
        totals = history.ledger.round_totals(round_)
        for key in (
            "client_flops",
            "client_seconds",
            "flops_by_hook/train",
            "seconds_by_hook/report",
            "server_flops",
            "server_seconds",
            "server_flops/after_round",
            "server_seconds/aggregate",
            "eval_seconds",
        ):
            assert row[f"ledger/{key}"] == pytest.approx(totals[key]), key
        assert row["ledger/flops_by_hook/train"] == row["ledger/flops"] > 0
        assert row["ledger/server_seconds/aggregate"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ledger_totals"]["server_seconds"] == pytest.approx(
        history.ledger.totals()["server_seconds"]
    )


# -- checkpoints and old formats ---------------------------------------------------------------
def test_checkpoint_round_trips_server_costs(
    tmp_path: Path, small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    strategy = FedAvg([AfterRoundWork(), ReportWork()], clients_per_round=2)
    fed = Federation(copy.deepcopy(small_model), small_data, strategy, seed=0)
    fed.run(2, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2)
    again = Federation(
        copy.deepcopy(small_model), small_data, FedAvg([AfterRoundWork(), ReportWork()], clients_per_round=2)
    )
    again.load_checkpoint(tmp_path)
    assert again.history.ledger.server_to_list() == fed.history.ledger.server_to_list()
    assert again.history.ledger.to_list() == fed.history.ledger.to_list()
    assert again.history.ledger.totals() == fed.history.ledger.totals()
    assert len(again.history.ledger.server) == 2
    # Resuming appends the next rounds' server costs.
    again.run(3, progress=False)
    assert [s.round for s in again.history.ledger.server] == [1, 2, 3]
    assert again.history.ledger.server[2].flops_by_phase == {"after_round": MATMUL}


def test_an_old_checkpoint_without_server_costs_loads(
    tmp_path: Path, small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(copy.deepcopy(small_model), small_data, FedAvg([PrepareWork()], clients_per_round=2))
    fed.run(1, progress=False, checkpoint_dir=tmp_path, checkpoint_every=1)
    # Rewrite the checkpoint as the previous format wrote it (without checksums).
    (tmp_path / "round-000001" / "manifest.json").unlink()
    state_json = tmp_path / "round-000001" / "state.json"
    meta = json.loads(state_json.read_text())
    del meta["state"]["ledger_server"]
    for rec in meta["state"]["ledger"]:
        rec["prepare_flops"] = rec["flops_by_hook"]["prepare"]
        rec["prepare_seconds"] = rec["seconds_by_hook"]["prepare"]
        del rec["flops_by_hook"], rec["seconds_by_hook"]
    state_json.write_text(json.dumps(meta))
    again = Federation(copy.deepcopy(small_model), small_data, FedAvg([PrepareWork()], clients_per_round=2))
    again.load_checkpoint(tmp_path)
    assert again.history.ledger.server == []
    for old, new in zip(again.history.ledger.records, fed.history.ledger.records, strict=True):
        assert old.flops_by_hook == new.flops_by_hook
        assert old.seconds_by_hook == {"prepare": new.seconds_by_hook["prepare"]}


def test_an_old_cost_dict_with_prepare_fields_loads() -> None:
    old = {
        "round": 3,
        "client_id": 1,
        "bytes_down": 10,
        "bytes_up": 5,
        "flops": 100,
        "peak_bytes": 64,
        "seconds": 2.0,
        "steps": 4,
        "groups_down": ["head"],
        "groups_up": ["head"],
        "flops_by_combination": {"all": 100},
        "prepare_flops": 7,
        "prepare_seconds": 0.5,
    }
    cost = ClientCost.from_dict(old)
    assert cost.flops_by_hook == {"train": 100, "prepare": 7}
    assert cost.seconds_by_hook == {"prepare": 0.5}
    assert cost.client_flops == 107
    assert cost.groups_up == ("head",)
    no_prepare = ClientCost.from_dict({**old, "prepare_flops": 0, "prepare_seconds": 0.0})
    assert no_prepare.flops_by_hook == {"train": 100} and no_prepare.seconds_by_hook == {}


def test_costs_round_trip_through_dicts_and_flowers_codec() -> None:
    cost = ClientCost(
        round=2,
        client_id=3,
        flops=50,
        groups_up=("head",),
        flops_by_combination={"a+b": 50},
        flops_by_hook={"train": 50, "report": 9, "loss_terms": 4},
        seconds_by_hook={"train": 1.25, "report": 0.5, "loss_terms": 0.125},
    )
    server = ServerCost(
        round=2, flops_by_phase={"after_round": 11}, seconds_by_phase={"after_round": 0.5}, eval_seconds=1.0
    )
    assert ClientCost.from_dict(cost.to_dict()) == cost
    assert ServerCost.from_dict(server.to_dict()) == server
    assert ClientCost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost
    pytest.importorskip("flwr")
    from flwr.app import RecordDict

    from fedmm.core.flower.codec import pack, unpack

    content = RecordDict()
    pack(content, "fedmm.cost", cost.to_dict())
    back = ClientCost.from_dict(unpack(content, "fedmm.cost"))
    assert back == cost
    assert isinstance(back.flops_by_hook["report"], int) and isinstance(back.seconds_by_hook["train"], float)
