"""The fedmvp benchmark's fairness machinery: public pairs for the baseline, sample budgets, arm budgets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedmm.completion.fedmvp.bench import SampleBudget, client_sizes, compare, with_public_pairs
from fedmm.core import datasets
from fedmm.core.data.registry import load_central
from fedmm.core.data.types import FederatedDataset
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.protocol import ClientContext, TrainPlan


@pytest.fixture(scope="module")
def data() -> FederatedDataset:
    return datasets.load(
        "synthetic",
        clients=4,
        partition="iid",
        num_samples=250,
        test_samples=60,
        incomplete_fraction=0.8,
        validation_fraction=0.2,
        seed=0,
    )


def test_public_pairs_are_dealt_once_each_and_clients_keep_their_own(data: FederatedDataset) -> None:
    public = data.validation
    assert public is not None
    out = with_public_pairs(data, public, seed=3)
    n = len(data.train)
    assert len(out.train) == n + len(public)
    appended: list[int] = []
    for c in range(data.num_clients):
        own, mine = data.partition.of(c), out.partition.of(c)
        np.testing.assert_array_equal(mine[: own.size], own)  # the client's own samples, unchanged
        appended.extend(mine[own.size :].tolist())
        assert abs((mine.size - own.size) - len(public) / data.num_clients) < 1  # equal shares
    # Every public pair lands at exactly one client, with its features, label and both modalities.
    assert sorted(appended) == list(range(n, n + len(public)))
    rows = np.arange(n, n + len(public))
    for m in data.modality_names:
        np.testing.assert_array_equal(out.train.features[m][rows], public.features[m])
    np.testing.assert_array_equal(out.train.labels[rows], public.labels)
    assert out.train.present[rows].all() and not out.train.generated[rows].any()
    # The shares depend on the seed (the run seed draws them).
    other = with_public_pairs(data, public, seed=4)
    assert any(
        not np.array_equal(out.partition.of(c), other.partition.of(c)) for c in range(data.num_clients)
    )


def _cctx(client_id: int, seed: int) -> ClientContext:
    gen = torch.Generator().manual_seed(seed)
    return ClientContext(client_id, 1, TrainPlan(), {}, (), 2, gen)


def test_sample_budget_draws_a_fresh_subset_of_the_budgeted_size(data: FederatedDataset) -> None:
    client = data.client(0)
    budget = SampleBudget({0: 20, 1: 10_000})
    a = budget.prepare(_cctx(0, 1), client)
    b = budget.prepare(_cctx(0, 2), client)
    assert a.num_samples == b.num_samples == 20
    assert set(a.indices.tolist()) <= set(client.indices.tolist())
    assert len(set(a.indices.tolist())) == 20  # without replacement
    assert not np.array_equal(a.indices, b.indices)  # another round's generator, another draw
    # A client at or under its budget trains on everything it has.
    whole = data.client(1)
    assert budget.prepare(_cctx(1, 1), whole) is whole


def test_compare_gives_every_arm_the_same_steps_except_drop() -> None:
    central = load_central("synthetic", num_samples=200, num_classes=3, test_samples=60, seed=0)
    arms_seen: dict[str, Any] = {}

    def one_seed(run: SeedRun) -> dict[str, Any]:
        res, curves = compare(
            run,
            central,
            group="toy",
            rounds=2,
            federate_options={"clients": 3, "partition": "iid"},
            encoders={},
            local_epochs=1,
            extractor_epochs=1,
            generator_epochs=1,
        )
        arms_seen.update(run.arms)
        assert set(curves) == set(run.arms)
        return res

    out = Benchmark("toy-fedmvp", one_seed, protocol="3")(mode="smoke", seeds=(0,))
    expected = {"zero_fill", "masked", "drop", "public_pairs", "fedmvp_retrieval", "fedmvp", "complete_data"}
    assert set(arms_seen) == expected
    assert {info.group for info in arms_seen.values()} == {"toy"}
    # Every arm but drop runs exactly the baseline's local steps (completion adds no samples, the
    # public pairs are held to each client's own count); the public-pairs arm the same FLOPs too.
    for arm in expected - {"drop", "zero_fill"}:
        assert out[f"steps_{arm}"] == out["steps_zero_fill"], arm
    assert out["flops_public_pairs"] == out["flops_zero_fill"]
    flagged = {(u["arm"], u["measure"]) for u in out["unequal_budget"]}
    assert not any(measure == "steps" for _, measure in flagged)
    assert out["steps_drop"] < out["steps_zero_fill"]  # fewer samples by definition (exempt)
    # The generator: trained by the server (charged), shipped (its bytes), used by the clients.
    assert out["generator_server_flops"] > 0 and out["generator_bytes"] > 0
    assert out["completion_flops_fedmvp"] > 0
    # Every arm's fused and single-modality accuracies are reported.
    for arm in expected:
        assert 0.0 <= out[f"accuracy_{arm}"] <= 1.0
        for m in central.train.modality_names:
            assert 0.0 <= out[f"accuracy_{arm}_{m}"] <= 1.0
    assert out["gain_vs_public_pairs"] == pytest.approx(out["accuracy_fedmvp"] - out["accuracy_public_pairs"])


def test_client_sizes_match_the_partition(data: FederatedDataset) -> None:
    sizes = client_sizes(data)
    assert sum(sizes.values()) == len(data.train)
    assert [sizes[c] for c in range(data.num_clients)] == data.partition.sizes().tolist()
