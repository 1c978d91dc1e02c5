"""The select benchmarks under the seed harness: registration, and the random baseline's first round."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pytest
import torch

from fedmm.core import datasets, models
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.federation import Federation
from fedmm.core.protocol import FedAvg
from fedmm.select.bmsfed.bench import AllClientsFirstRound


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["fedmfs", "bmsfed"])
def test_select_benchmarks_are_registered_harness_benchmarks(name: str) -> None:
    (ep,) = [e for e in entry_points(group="fedmm.benchmarks") if e.name == name]
    bench = ep.load()
    assert isinstance(bench, Benchmark)
    assert bench.protocol == {"fedmfs": "3", "bmsfed": "3"}[name]
    assert bench.quick_seeds == (0, 1, 2) and bench.full_seeds == (0, 1, 2, 3, 4)
    assert bench.headline and bench.draws_plots


def _data() -> FederatedDataset:
    return datasets.load("synthetic", clients=6, partition="iid", num_samples=240, num_classes=3, seed=0)


def _run(data: FederatedDataset, techniques: list[Any], rounds: int = 4) -> Federation:
    torch.manual_seed(0)
    encoders = {m: "mlp" for m in data.modality_names}
    model = models.late_fusion(data.modalities, data.num_classes, encoders=encoders, embed_dim=8, hidden=8)
    strategy = FedAvg(techniques=techniques, clients_per_round=2, local_epochs=1, batch_size=32, lr=0.05)
    fed = Federation(model, data, strategy, seed=3, eval_every=rounds)
    fed.run(rounds, progress=False)
    return fed


def test_all_clients_first_round_trains_everyone_once_then_samples_like_fedavg() -> None:
    data = _data()
    plain = _run(data, [])
    first = _run(data, [AllClientsFirstRound(2)])
    assert [r["selected"] for r in first.history.rounds] == [6, 2, 2, 2]
    assert [r["selected"] for r in plain.history.rounds] == [2, 2, 2, 2]

    # Rounds 2.. draw the clients plain FedAvg draws (same per-round random stream): only round 1
    # differs. The ledger records which clients trained in each round.
    def clients(fed: Federation) -> list[list[int]]:
        rows: dict[int, list[int]] = {}
        for c in fed.history.ledger.records:
            rows.setdefault(c.round, []).append(c.client_id)
        return [sorted(rows[r]) for r in sorted(rows)]

    assert clients(first)[0] == list(range(6))
    assert clients(first)[1:] == clients(plain)[1:]
    # The harness sees the same first round as BMSFed's: every client.
    run = SeedRun(0, "smoke")
    run.arm("random", first.history)
    assert run.budgets["clients_round1_random"] == 6.0


def test_all_clients_first_round_state_round_trips_and_rejects_zero() -> None:
    t = AllClientsFirstRound(3)
    assert t.state_dict() == {"started": False}
    t.load_state_dict({"started": True})
    assert t.state_dict() == {"started": True} and t.config() == {"clients_per_round": 3}
    with pytest.raises(ConfigError):
        AllClientsFirstRound(0)
    cands = np.arange(5, dtype=np.int64)
    ctx: Any = type("Ctx", (), {"rng": np.random.default_rng(0)})()
    picked = t.select_clients(ctx, cands)
    assert picked.shape == (3,) and len(set(picked.tolist())) == 3


def _means(gains: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Seed means with every grid cell at (weak gain, accuracy gain) = (0, -1) unless given."""
    from fedmm.select.bmsfed.bench import GRID, cell_name

    out: dict[str, float] = {}
    for cell in GRID:
        name = cell_name(*cell)
        weak, acc = gains.get(name, (0.0, -1.0))
        out[f"weak_gain_{name}"], out[f"accuracy_gain_{name}"] = weak, acc
    return out


def test_tuning_chooses_the_best_weak_gain_among_cells_that_keep_overall_accuracy() -> None:
    from fedmm.select.bmsfed.bench import choose

    means = _means(
        {
            "lr0.01_chi1.2_me0.02": (0.09, -0.004),  # the largest weak gain, but overall accuracy drops
            "lr0.05_chi2.0_me0.2": (0.05, 0.0),
            "lr0.05_chi1.2_me2.0": (0.04, 0.01),
        }
    )
    assert choose(means) == (0.05, 2.0, 0.2)
    # A tie on the weak gain goes to the paper's λ = 2.0.
    means = _means({"lr0.05_chi2.0_me0.2": (0.05, 0.0), "lr0.05_chi2.0_me2.0": (0.05, 0.0)})
    assert choose(means) == (0.05, 2.0, 2.0)
    # No cell keeps the overall accuracy: the one that loses least.
    means = _means({"lr0.01_chi2.0_me0.02": (0.0, -0.002)})
    assert choose(means) == (0.01, 2.0, 0.02)


def test_tuning_runs_only_on_the_tuning_seeds_by_default() -> None:
    from fedmm.select.bmsfed.bench import TUNING as BENCHMARK
    from fedmm.select.bmsfed.bench import TUNING_BENCH_SEEDS as TUNING_SEEDS

    (ep,) = [e for e in entry_points(group="fedmm.benchmarks") if e.name == "bmsfed-tuning"]
    assert ep.load() is BENCHMARK and BENCHMARK.protocol == "1"
    assert BENCHMARK.quick_seeds == TUNING_SEEDS == BENCHMARK.full_seeds == (0, 1, 2, 3, 4)


def test_bmsfed_target_needs_the_weak_gain_over_random_and_divfl_and_no_overall_loss() -> None:
    from fedmm.select.bmsfed.bench import target_met

    met = {
        "weak_modality_accuracy_bmsfed": 0.60,
        "weak_modality_accuracy_random": 0.56,
        "weak_modality_accuracy_divfl": 0.59,
        "accuracy_bmsfed": 0.92,
        "accuracy_random": 0.92,
    }
    assert target_met(met)
    assert not target_met({**met, "weak_modality_accuracy_divfl": 0.61})  # DivFL's weak modality is better
    assert not target_met({**met, "weak_modality_accuracy_random": 0.58})  # under +3 pp over random
    assert not target_met({**met, "accuracy_random": 0.921})  # overall accuracy lower than random's


def test_bmsfed_arms_are_random_divfl_no_me_bmsfed_with_one_first_round() -> None:
    import math

    from fedmm.select.bmsfed.bench import ARMS, _arms

    arms = _arms(5)
    assert tuple(arms) == ARMS == ("random", "divfl", "no_me", "bmsfed")
    divfl = arms["divfl"][0]
    assert math.isinf(divfl.args.chi) and divfl.args.me_weight == 0.0
    assert arms["no_me"][0].args.me_weight == 0.0


def test_fedmfs_headline_gamma_is_the_largest_that_can_reach_the_target_saving() -> None:
    from fedmm.select.fedmfs.bench import headline_gamma

    # hapt-views' four MLPs: γ = 1 → 11.5x, γ = 2 → 5.75x, γ = 3 → 1.70x of the 4x target.
    assert headline_gamma([29190, 29190, 6150, 6150]) == 2
    assert headline_gamma([15366, 15366]) == 1  # 2x at best: the only choice
    assert headline_gamma([79562, 91850]) == 1
    assert headline_gamma([10, 10, 10, 10, 1]) == 1  # only γ = 1 reaches 4x (41 / 1)
