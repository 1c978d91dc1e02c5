"""Batched clients: a round's clients trained as one vectorised computation give the sequential
engine's numbers (up to floating-point reassociation), its ledger, and fall back where they cannot."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedmm.core import FedAvg, Federation, datasets, models
from fedmm.core.algorithms import FedNova, FedProx
from fedmm.core.data.types import FederatedDataset
from fedmm.core.engine import InProcessEngine
from fedmm.core.protocol import Technique


@pytest.fixture(scope="module")
def uneven() -> FederatedDataset:
    # Unequal clients (Dirichlet sizes: last batches of every size), 30 % of samples missing a modality.
    return datasets.load(
        "synthetic", clients=8, partition="dirichlet", alpha=0.5, incomplete_fraction=0.3, seed=1
    )


def run(
    data: FederatedDataset,
    batched: bool,
    rounds: int = 3,
    techniques: list[Technique] | None = None,
    fusion: str = "concat",
    model: nn.Module | None = None,
    **strategy: Any,
) -> tuple[Federation, InProcessEngine]:
    torch.manual_seed(0)
    model = (
        model if model is not None else models.late_fusion(data.modalities, data.num_classes, fusion=fusion)
    )
    fed = Federation(
        model, data, FedAvg(techniques or [], clients_per_round=5, **strategy), device="cpu", seed=3
    )
    engine = InProcessEngine(
        fed.model, fed.data, fed.strategy.techniques, meter=fed.meter, batch_clients=batched
    )
    fed.run(rounds, progress=False, engine=engine)
    return fed, engine


def assert_same(a: Federation, b: Federation, weights_rtol: float | None = 1e-5) -> None:
    for x, y in zip(a.history.rounds, b.history.rounds, strict=True):
        for key in ("accuracy", "loss", "train_loss"):
            assert abs(x[key] - y[key]) <= 1e-4, (x["round"], key, x[key], y[key])
    if weights_rtol is not None:
        for g, arrays in a.global_arrays.items():
            for k, v in arrays.items():
                scale = float(np.abs(v).max()) or 1.0
                diff = float(np.abs(v - b.global_arrays[g][k]).max())
                assert diff <= weights_rtol * scale, (k, diff, scale)
    # The ledger stays per client: the same clients, steps, bytes, FLOPs and peak memory.
    for ca, cb in zip(a.history.ledger.records, b.history.ledger.records, strict=True):
        assert (ca.round, ca.client_id, ca.steps) == (cb.round, cb.client_id, cb.steps)
        assert (ca.bytes_down, ca.bytes_up, ca.groups_up) == (cb.bytes_down, cb.bytes_up, cb.groups_up)
        assert (ca.flops, ca.peak_bytes) == (cb.flops, cb.peak_bytes)
        assert cb.seconds > 0 and cb.seconds_by_hook["train"] > 0


def test_the_core_fedavg_job_batched_equals_sequential(uneven: FederatedDataset) -> None:
    seq, e_seq = run(uneven, False, momentum=0.9)
    bat, e_bat = run(uneven, True, momentum=0.9)
    assert (e_seq.rounds_batched, e_bat.rounds_batched, e_bat.rounds_sequential) == (0, 3, 0)
    assert_same(seq, bat)


def test_attention_fusion_with_local_epochs_weight_decay_and_clipping(uneven: FederatedDataset) -> None:
    kw = {"momentum": 0.9, "weight_decay": 1e-3, "max_grad_norm": 0.5, "local_epochs": 2}
    seq, _ = run(uneven, False, fusion="attention", **kw)
    bat, e_bat = run(uneven, True, fusion="attention", **kw)
    assert e_bat.rounds_batched == 3
    assert_same(seq, bat)


def test_adam_batched_matches_to_adams_own_noise(uneven: FederatedDataset) -> None:
    # Adam divides by the root of the second moment, so a gradient near zero moves its weight by
    # about ±lr whatever its rounding: float noise grows over the steps (one client's 61 steps:
    # 3e-8 apart with SGD, 3e-5 with Adam), and only a looser bound holds.
    seq, _ = run(uneven, False, rounds=2, optimizer="adamw", lr=3e-3, weight_decay=1e-2)
    bat, e_bat = run(uneven, True, rounds=2, optimizer="adamw", lr=3e-3, weight_decay=1e-2)
    assert e_bat.rounds_batched == 2
    for x, y in zip(seq.history.rounds, bat.history.rounds, strict=True):
        for key in ("accuracy", "loss", "train_loss"):
            assert abs(x[key] - y[key]) <= 2e-3, (x["round"], key, x[key], y[key])


def test_fednova_batched_equals_sequential(uneven: FederatedDataset) -> None:
    seq, _ = run(uneven, False, techniques=[FedNova()], momentum=0.9)
    bat, e_bat = run(uneven, True, techniques=[FedNova()], momentum=0.9)
    assert e_bat.rounds_batched == 3
    assert_same(seq, bat)


def test_a_loss_term_technique_runs_one_by_one_and_says_why_once(
    uneven: FederatedDataset, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fedmm"):
        _, engine = run(uneven, True, techniques=[FedProx()])
    assert (engine.rounds_batched, engine.rounds_sequential) == (0, 3)
    said = [r.getMessage() for r in caplog.records if "not batched" in r.getMessage()]
    reason = "a technique adds loss terms inside each step (FedProx)"
    assert said == [f"in-process engine: clients train one by one, not batched: {reason}"]


def test_plans_that_differ_run_one_by_one(uneven: FederatedDataset) -> None:
    class OddLr(Technique):
        def configure(self, ctx: Any, client_id: int, plan: Any) -> Any:
            return plan.replace(lr=plan.lr * (1 + client_id % 2))

    _, engine = run(uneven, True, rounds=1, techniques=[OddLr()])
    assert engine.rounds_sequential == 1


class _ReadsAScalar(nn.Module):
    """A model whose forward reads a tensor's value: it cannot be vectorised."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, batch: Any, active: Any = None) -> Any:
        out = self.inner(batch, active)
        if float(out.logits.sum()) > 1e30:  # never true; reading it is what breaks vmap
            raise AssertionError
        return out

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        return {g: tuple(f"inner.{k}" for k in keys) for g, keys in self.inner.parameter_groups().items()}


def test_a_model_that_does_not_vectorise_falls_back_to_the_sequential_numbers(
    uneven: FederatedDataset, caplog: pytest.LogCaptureFixture
) -> None:
    def model() -> nn.Module:
        torch.manual_seed(0)
        return _ReadsAScalar(models.late_fusion(uneven.modalities, uneven.num_classes))

    seq, _ = run(uneven, False, model=model())
    with caplog.at_level(logging.INFO, logger="fedmm"):
        bat, engine = run(uneven, True, model=model())
    assert (engine.rounds_batched, engine.rounds_sequential) == (0, 3)
    assert any("the vectorised step failed" in r.getMessage() for r in caplog.records)
    assert [r["accuracy"] for r in seq.history.rounds] == [r["accuracy"] for r in bat.history.rounds]
