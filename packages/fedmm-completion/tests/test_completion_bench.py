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


def test_compare_gives_every_arm_its_budget_and_flags_only_the_extra_copies() -> None:
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
            copies=3,
            extractor_epochs=1,
        )
        arms_seen.update(run.arms)
        assert set(curves) == set(run.arms)
        return res

    out = Benchmark("toy-fedmvp", one_seed, protocol="2")(mode="smoke", seeds=(0,))
    expected = {
        "zero_fill",
        "masked",
        "drop",
        "zero_fill_public",
        "fedmvp",
        "fedmvp_copies",
        "fedmvp_copies_matched",
        "complete_data",
    }
    assert set(arms_seen) == expected
    assert {info.group for info in arms_seen.values()} == {"toy"}
    # The public-pairs baseline and the matched copies run exactly the baseline's steps; the
    # public-pairs baseline also the same FLOPs (same batch sizes, plain cross-entropy).
    for arm in ("zero_fill_public", "fedmvp_copies_matched", "fedmvp", "masked", "complete_data"):
        assert out[f"steps_{arm}"] == out["steps_zero_fill"]
    assert out["flops_zero_fill_public"] == out["flops_zero_fill"]
    # Three completions per incomplete sample: more than twice the steps, and flagged.
    assert out["steps_fedmvp_copies"] > 2 * out["steps_zero_fill"]
    flagged = {(u["arm"], u["measure"]) for u in out["unequal_budget"]}
    assert ("fedmvp_copies", "steps") in flagged
    assert not any(arm in ("zero_fill_public", "drop", "masked") for arm, _ in flagged)
    assert ("fedmvp_copies_matched", "steps") not in flagged
    # drop trains on fewer samples by definition (exempt), never on more.
    assert out["steps_drop"] < out["steps_zero_fill"]
    # Every arm's fused and single-modality accuracies are reported.
    for arm in expected:
        assert 0.0 <= out[f"accuracy_{arm}"] <= 1.0
        for m in central.train.modality_names:
            assert 0.0 <= out[f"accuracy_{m}_only_test_{arm}"] <= 1.0
    assert out["gain_vs_zero_fill_public_pp"] == pytest.approx(
        100 * (out["accuracy_fedmvp"] - out["accuracy_zero_fill_public"])
    )


def test_client_sizes_match_the_partition(data: FederatedDataset) -> None:
    sizes = client_sizes(data)
    assert sum(sizes.values()) == len(data.train)
    assert [sizes[c] for c in range(data.num_clients)] == data.partition.sizes().tolist()
