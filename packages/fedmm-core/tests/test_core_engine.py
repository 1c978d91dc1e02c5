"""The in-process engine: determinism, fault handling, checkpoints, ledger, plan semantics."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from fedmm.core import ClientContext, ClientResult, FedAvg, Federation, RoundContext, Technique, TrainPlan
from fedmm.core.arrays import nbytes
from fedmm.core.data.types import ClientData, FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.models import MultimodalModel
from fedmm.core.protocol import Combination


def _weights(fed: Federation) -> dict[str, np.ndarray]:
    return {k: v for g in fed.global_arrays.values() for k, v in g.items()}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_learning(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    runs = []
    for _ in range(2):
        fed = Federation(
            copy.deepcopy(small_model),
            small_data,
            FedAvg(clients_per_round=3, lr=0.05, momentum=0.9, local_epochs=2),
            seed=5,
        )
        history = fed.run(4, progress=False)
        runs.append((_weights(fed), history))
    assert _same(runs[0][0], runs[1][0])
    accs = [r["accuracy"] for r in runs[0][1].rounds]
    assert accs[-1] > 0.3  # 10 classes: chance is 0.1


def test_resume_is_bit_identical(
    tmp_path: Any, small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    full = Federation(copy.deepcopy(small_model), small_data, FedAvg(clients_per_round=3), seed=1)
    full.run(6, progress=False)
    part = Federation(copy.deepcopy(small_model), small_data, FedAvg(clients_per_round=3), seed=1)
    part.run(3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)  # "killed" after round 3
    resumed = Federation(copy.deepcopy(small_model), small_data, FedAvg(clients_per_round=3), seed=1)
    history = resumed.run(6, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True)
    assert resumed.round == 6 and len(history.rounds) == 6
    assert _same(_weights(full), _weights(resumed))
    assert len(history.ledger) == len(full.history.ledger)


class Faulty(Technique):
    """Breaks chosen clients in chosen ways (client-side hooks only)."""

    name = "faulty"

    def __init__(self, mode: str, clients: Sequence[int]) -> None:
        self.mode, self.clients = mode, set(clients)

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        if cctx.client_id in self.clients and self.mode == "raise":
            raise RuntimeError("disk on fire")
        return data

    def report(self, cctx: ClientContext, model: torch.nn.Module, data: ClientData) -> Mapping[str, Any]:
        if cctx.client_id in self.clients:
            with torch.no_grad():
                p = next(model.parameters())
                if self.mode == "nan":
                    p[0] = float("nan")
                elif self.mode == "inf":
                    p[0] = float("inf")
        return {}


@pytest.mark.parametrize("mode", ["raise", "nan", "inf"])
def test_bad_clients_are_dropped_and_counted(
    mode: str, small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(small_model, small_data, FedAvg([Faulty(mode, [0, 1])]), seed=0)
    history = fed.run(2, progress=False)
    assert all(r["dropped"] == 2 for r in history.rounds)
    assert not any(r["skipped"] for r in history.rounds)
    assert all(np.isfinite(v).all() for v in _weights(fed).values())
    assert {c.client_id for c in history.ledger.records} == {2, 3, 4, 5}


class WrongShape(Technique):
    name = "wrong-shape"

    def aggregate(self, ctx: RoundContext, results: Sequence[ClientResult]) -> None:
        return None


def test_wrong_shape_update_is_dropped(
    small_data: FederatedDataset, small_model: MultimodalModel, monkeypatch: Any
) -> None:
    import fedmm.core.engine as F

    real = F.client_round

    def bad_round(*args: Any, **kwargs: Any) -> ClientResult:
        result = real(*args, **kwargs)
        if result.client_id == 0:
            g = next(iter(result.update))
            k = next(iter(result.update[g]))
            result.update[g][k] = np.zeros((1, 2, 3), np.float32)
        return result

    monkeypatch.setattr(F, "client_round", bad_round)
    # One client at a time: the engine's sequential path is the one that calls client_round.
    fed = Federation(small_model, small_data, FedAvg(), seed=0, batch_clients=False)
    history = fed.run(1, progress=False)
    assert history.rounds[0]["dropped"] == 1


def test_too_few_survivors_skip_the_round(
    small_data: FederatedDataset, small_model: MultimodalModel, caplog: pytest.LogCaptureFixture
) -> None:
    fed = Federation(small_model, small_data, FedAvg([Faulty("raise", range(6))], min_clients=2), seed=0)
    before = _weights(fed)
    with caplog.at_level("WARNING", logger="fedmm"):
        history = fed.run(1, progress=False)
    assert history.rounds[0]["skipped"] is True
    assert _same(before, _weights(fed))
    assert [r.getMessage() for r in caplog.records] == [
        "round 1 skipped: 0 of 6 clients survived, fewer than min_clients=2; "
        "dropped: 6 × RuntimeError: disk on fire"
    ]


def test_ledger_counts_the_bytes_that_crossed(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(small_model, small_data, FedAvg(clients_per_round=2), seed=0)
    history = fed.run(1, progress=False)
    full = nbytes(fed.global_arrays)
    for rec in history.ledger.records:
        assert rec.bytes_down == full and rec.bytes_up == full
        assert rec.flops > 0 and rec.peak_bytes > 0 and rec.steps > 0 and rec.seconds > 0


class FreezeEncoders(Technique):
    name = "freeze"

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan.replace(train=("fusion", "head"))


def test_frozen_groups_are_not_uploaded_and_stay_bit_identical(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(small_model, small_data, FedAvg([FreezeEncoders()]), seed=0)
    enc_before = copy.deepcopy(fed.global_arrays["encoder.a"])
    head_before = copy.deepcopy(fed.global_arrays["head"])
    history = fed.run(2, progress=False)
    assert _same(enc_before, fed.global_arrays["encoder.a"])
    assert not _same(head_before, fed.global_arrays["head"])
    head_fusion = nbytes({g: fed.global_arrays[g] for g in ("fusion", "head")})
    assert all(r.bytes_up == head_fusion for r in history.ledger.records)


class OneModality(Technique):
    name = "one-modality"

    def __init__(self, modality: str | None) -> None:
        self.modality = modality

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        mods = None if self.modality is None else (self.modality,)
        return plan.replace(combinations=(Combination(mods, steps=3),))


def test_combinations_run_their_steps_and_cost_less(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    costs = {}
    for mod in (None, "a"):
        fed = Federation(
            copy.deepcopy(small_model), small_data, FedAvg([OneModality(mod)], clients_per_round=1), seed=0
        )
        h = fed.run(1, progress=False)
        rec = h.ledger.records[0]
        assert rec.steps == 3
        assert rec.flops_by_combination == {"all" if mod is None else mod: rec.flops}
        costs[mod] = rec.flops
    assert costs["a"] < costs[None]  # encoder b never ran


class PerClientModality(Technique):
    """Client 0 trains only modality ``a``; the others train both (a Partial-Update-like plan)."""

    name = "per-client-modality"

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        mods = ("a",) if client_id == 0 else None
        return plan.replace(combinations=(Combination(mods, steps=2),))


def test_an_encoder_is_averaged_over_the_clients_that_trained_it(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    # Was: every trainable group was uploaded, so client 0's untouched copy of encoder.b was
    # averaged in and diluted the others' updates.
    fed = Federation(small_model, small_data, FedAvg([PerClientModality()], clients_per_round=4), seed=0)
    history = fed.run(1, progress=False)
    by_client = {r.client_id: r for r in history.ledger.records}
    assert 0 in by_client and len(by_client) > 1
    assert "encoder.b" not in by_client[0].groups_up
    assert {"encoder.a", "fusion", "head"} <= set(by_client[0].groups_up)
    assert all("encoder.b" in r.groups_up for c, r in by_client.items() if c != 0)


def test_the_global_encoder_moves_only_by_its_trainers_updates(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    # With one client that trains only 'a', encoder.b must stay bit-identical (nobody trained it).
    class OnlyA(Technique):
        name = "only-a"

        def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
            return plan.replace(combinations=(Combination(("a",), steps=2),))

    fed = Federation(small_model, small_data, FedAvg([OnlyA()], clients_per_round=2), seed=0)
    before = copy.deepcopy(fed.global_arrays["encoder.b"])
    history = fed.run(1, progress=False)
    assert _same(before, fed.global_arrays["encoder.b"])
    assert all("encoder.b" not in r.groups_up for r in history.ledger.records)


class KeepEncoders(Technique):
    """Clients keep the encoders and only download fusion + head after their first round."""

    name = "keep"

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan.replace(download=("fusion", "head"), train=("fusion", "head"), keep=("encoder.*",))


def test_kept_groups_are_not_downloaded_again(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(small_model, small_data, FedAvg([KeepEncoders()], clients_per_round=6), seed=0)
    history = fed.run(2, progress=False)
    full = nbytes(fed.global_arrays)
    small = nbytes({g: fed.global_arrays[g] for g in ("fusion", "head")})
    first = [r.bytes_down for r in history.ledger.records if r.round == 1]
    second = [r.bytes_down for r in history.ledger.records if r.round == 2]
    assert first == [full] * 6  # nothing kept yet: everything must be sent
    assert second == [small] * 6


class Agg1(Technique):
    name = "agg1"

    def aggregate(self, ctx: RoundContext, results: Sequence[ClientResult]) -> None:
        return None


class Agg2(Agg1):
    name = "agg2"


def test_two_aggregation_owners_fail_at_construction() -> None:
    both = "techniques 'agg1' and 'agg2' cannot be combined: both own the 'aggregate' step"
    with pytest.raises(ConfigError, match=both):
        FedAvg([Agg1(), Agg2()])


class Order(Technique):
    def __init__(self, tag: str, log: list[str]) -> None:
        self.tag, self.log = tag, log

    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        self.log.append(f"select-{self.tag}")
        return candidates[: len(candidates) - 1]

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan.with_extra(order=[*plan.extra.get("order", []), self.tag])


def test_hooks_compose_in_list_order(small_data: FederatedDataset, small_model: MultimodalModel) -> None:
    log: list[str] = []
    strategy = FedAvg([Order("x", log), Order("y", log)])
    fed = Federation(small_model, small_data, strategy, seed=0)
    ctx = fed.context(1)
    assert strategy.select_clients(ctx).tolist() == [0, 1, 2, 3]  # each narrowed by one
    assert log == ["select-x", "select-y"]
    assert strategy.configure(ctx, 0).extra["order"] == ["x", "y"]


def test_train_plan_round_trips_as_plain_data() -> None:
    plan = TrainPlan(train=("head",), combinations=(Combination(("a",), 4), Combination()), extra={"k": 1})
    assert TrainPlan.from_dict(plan.to_dict()) == plan


def test_unlabelled_samples_do_not_train(small_model: MultimodalModel) -> None:
    from fedmm.core import datasets

    data = datasets.load("synthetic", clients=3, num_samples=300, missing_label_rate=1.0, seed=0)
    fed = Federation(small_model, data, FedAvg(), seed=0)
    before = _weights(fed)
    history = fed.run(1, progress=False)
    assert np.isnan(history.rounds[0]["train_loss"])  # no labelled sample, no loss term: no step
    assert _same(before, _weights(fed))


class AskEveryone(Technique):
    """Owns selection: its choice is final, even above clients_per_round."""

    name = "ask-everyone"
    owns = frozenset({"select_clients"})

    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        return candidates

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        return plan.with_extra(prototypes=np.zeros((10, 4), np.float32))

    def after_round(self, ctx: RoundContext, metrics: dict[str, Any]) -> None:
        self.seen = [r.client_id for r in ctx.results]
        first = ctx.results[0]
        key = next(iter(first.update["head"]))
        self.moved = float(np.abs(ctx.previous_arrays["head"][key] - first.update["head"][key]).max())
        metrics["ask/clients"] = float(len(ctx.results))


def test_selection_owner_is_final_and_after_round_sees_the_results(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    tech = AskEveryone()
    fed = Federation(small_model, small_data, FedAvg([tech], clients_per_round=2), seed=0)
    history = fed.run(1, progress=False)
    assert history.rounds[0]["selected"] == 6 and tech.seen == list(range(6))
    assert tech.moved > 0  # previous_arrays are the arrays the clients started from
    assert history.rounds[0]["ask/clients"] == 6.0
    full = nbytes(fed.global_arrays)
    assert all(r.bytes_down == full + 10 * 4 * 4 for r in history.ledger.records)  # plan arrays count


def test_technique_metrics_get_their_own_plot(tmp_path: Any) -> None:
    from fedmm.core.plots import plot_run, technique_series

    rows = [
        {"round": 1, "accuracy": 0.5, "fedmfs/shapley/a": 0.2, "fedmfs/shapley/b": 0.1, "ledger/flops": 3.0},
        {"round": 2, "accuracy": 0.6, "fedmfs/shapley/a": 0.3, "fedmfs/shapley/b": 0.05, "skipped": False},
    ]
    assert technique_series(rows) == {"fedmfs/shapley": ["fedmfs/shapley/a", "fedmfs/shapley/b"]}
    written = plot_run(rows, tmp_path)
    assert (tmp_path / "fedmfs_shapley.png") in written and (tmp_path / "fedmfs_shapley.png").exists()


def test_clients_do_not_upload_encoders_of_modalities_they_lack(small_model: MultimodalModel) -> None:
    from fedmm.core import datasets

    data = datasets.load("synthetic", clients=6, num_samples=600, unimodal_fraction=1.0, seed=0)
    assert data.client_modalities is not None
    fed = Federation(small_model, data, FedAvg(), seed=0)
    history = fed.run(1, progress=False)
    for rec in history.ledger.records:
        (mod,) = data.client(rec.client_id).modalities
        sent = nbytes({g: fed.global_arrays[g] for g in (f"encoder.{mod}", "fusion", "head")})
        assert rec.bytes_up == sent


class Builds(Technique):
    name = "builds"

    def create_model(self, data: FederatedDataset, options: Mapping[str, Any]) -> torch.nn.Module | None:
        from fedmm.core.models import late_fusion

        return late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"}, hidden=7)


class AlsoBuilds(Builds):
    name = "also-builds"


def test_a_technique_can_own_the_model(small_data: FederatedDataset) -> None:
    from fedmm.core.config import parse_config
    from fedmm.core.runner import build_model

    strategy = FedAvg([Builds()])
    cfg = parse_config({"data": {"name": "synthetic"}})
    model = build_model(cfg, small_data, strategy)
    assert model.head.in_features == 7  # type: ignore[union-attr]
    both = "techniques 'builds' and 'also-builds' cannot be combined: both build the model"
    with pytest.raises(ConfigError, match=both):
        FedAvg([Builds(), AlsoBuilds()])


class PrepareWork(Technique):
    """A prepare hook that does measurable torch work (as a completion model would)."""

    name = "prepare_work"

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        a = torch.ones(16, 32)
        _ = a @ torch.ones(32, 8)
        return data


def test_prepare_work_is_measured_in_the_ledger(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(small_model, small_data, FedAvg([PrepareWork()], clients_per_round=2), seed=0)
    history = fed.run(1, progress=False)
    for rec in history.ledger.records:
        assert rec.flops_by_hook["prepare"] == 2 * 16 * 32 * 8
        assert 0 < rec.seconds_by_hook["prepare"] <= rec.seconds
    assert history.ledger.totals()["flops_by_hook/prepare"] == 2 * 2 * 16 * 32 * 8


def test_hook_contexts_are_frozen_and_read_only(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    """A server hook reads the round from its context; it cannot change what later hooks see."""
    import dataclasses

    fed = Federation(small_model, small_data, FedAvg(), seed=0)
    fed.run(1, progress=False)
    ctx = fed.context(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.round = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        ctx.reports[0] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        ctx.history[0]["round"] = 9  # type: ignore[index]
    group = next(iter(ctx.global_arrays))
    key = next(iter(ctx.global_arrays[group]))
    with pytest.raises(ValueError, match="read-only"):
        ctx.global_arrays[group][key][...] = 0.0
    results_ctx = ctx.with_results(())
    assert results_ctx.previous_arrays is ctx.global_arrays and results_ctx.results == ()


class WritesGlobalArrays(Technique):
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        group = next(iter(ctx.global_arrays))
        for value in ctx.global_arrays[group].values():
            value += 1.0
        return plan


def test_a_hook_writing_into_the_global_arrays_fails_instead_of_changing_them(
    small_data: FederatedDataset, small_model: MultimodalModel
) -> None:
    fed = Federation(small_model, small_data, FedAvg([WritesGlobalArrays()]), seed=0)
    before = {g: {k: v.copy() for k, v in arrays.items()} for g, arrays in fed.global_arrays.items()}
    with pytest.raises(ValueError, match="read-only"):
        fed.run(1, progress=False)
    for g, arrays in before.items():
        for k, v in arrays.items():
            np.testing.assert_array_equal(fed.global_arrays[g][k], v)
