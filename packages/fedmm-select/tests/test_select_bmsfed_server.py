"""BMSFed's bookkeeping on hand-made inputs: ``report`` (accuracies, ρ_k, prototypes), ``after_round``
(ρ̄ and the weak modality, which update-vector rows are refreshed, the prototype merge), who may join
``S_I``, and the warning when no client holds both modalities."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedmm.core import datasets, models
from fedmm.core.data.types import Batch, ClientData, ModalitySpec, SampleSet
from fedmm.core.federation import Federation
from fedmm.core.ledger import ClientCost
from fedmm.core.models.model import ModelOutput
from fedmm.core.protocol import ClientContext, ClientResult, Combination, FedAvg, RoundContext, TrainPlan
from fedmm.select.bmsfed import BMSFed
from fedmm.select.bmsfed.losses import EPS

SPECS = (ModalitySpec("a", (2,)), ModalitySpec("b", (2,)))
NAN = math.nan


class Identity(nn.Module):
    """A 'model' whose embedding of each modality is its input (zero where absent)."""

    def forward(self, batch: Batch) -> ModelOutput:
        z = {m: batch.features[m] * batch.present[:, i : i + 1] for i, m in enumerate(batch.modalities)}
        n = len(batch)
        return ModelOutput(torch.zeros(n, 2), z, torch.zeros(n, 4), batch.present)


def _client(mask: tuple[bool, bool] = (True, True)) -> ClientData:
    # a: class 0 at 0 and 2, class 1 at 1, 5, 6 → prototypes 1 and 4; 1 is nearer class 0's: 4/5 right.
    # b: class 0 at 0, 2, 1 → prototype 1; class 1 at 3, 1 → prototype 2; 2 and the class-1 1 miss: 3/5.
    # Sample 4 has no b, sample 5 no a; sample 6 is unlabelled (ignored, far away to show it).
    a = [[0, 0], [2, 0], [1, 0], [5, 0], [6, 0], [0, 0], [100, 0]]
    b = [[0, 0], [0, 2], [0, 3], [0, 1], [0, 0], [0, 1], [0, 100]]
    labels = np.array([0, 0, 1, 1, 1, 0, -1])
    present = np.ones((7, 2), dtype=bool)
    present[4, 1] = present[5, 0] = False
    samples = SampleSet(SPECS, {"a": np.array(a, float), "b": np.array(b, float)}, labels, present)
    return ClientData(0, samples, np.arange(7), np.array(mask))


def _cctx(plan: TrainPlan) -> ClientContext:
    return ClientContext(0, 1, plan, {}, SPECS, 2, torch.Generator())


def test_report_gives_accuracies_rho_and_prototypes_of_the_trained_modalities() -> None:
    rep = BMSFed().report(_cctx(TrainPlan()), Identity(), _client())
    assert rep["bmsfed/acc/a"] == pytest.approx(0.8, abs=1e-12)
    assert rep["bmsfed/acc/b"] == pytest.approx(0.6, abs=1e-12)
    assert rep["bmsfed/rho"] == pytest.approx(0.8 / (0.6 + EPS), rel=1e-12)
    np.testing.assert_allclose(rep["bmsfed/prototypes/a"], [[1, 0], [4, 0]])
    np.testing.assert_allclose(rep["bmsfed/prototypes/b"], [[0, 1], [0, 2]])
    np.testing.assert_array_equal(rep["bmsfed/counts/a"], [2, 3])
    np.testing.assert_array_equal(rep["bmsfed/counts/b"], [3, 2])
    # An S_I client of b trained only b: b's prototypes only, but both accuracies and ρ.
    only_b = TrainPlan(combinations=(Combination(("b",)),))
    rep_b = BMSFed().report(_cctx(only_b), Identity(), _client())
    assert set(rep_b) == {
        "bmsfed/acc/a",
        "bmsfed/acc/b",
        "bmsfed/rho",
        "bmsfed/prototypes/b",
        "bmsfed/counts/b",
    }
    assert rep_b["bmsfed/rho"] == rep["bmsfed/rho"]
    # A client holding only b: its accuracy and prototypes, no ρ (one modality).
    rep_one = BMSFed().report(_cctx(TrainPlan()), Identity(), _client((False, True)))
    assert set(rep_one) == {"bmsfed/acc/b", "bmsfed/prototypes/b", "bmsfed/counts/b"}
    assert rep_one["bmsfed/acc/b"] == pytest.approx(0.6, abs=1e-12)


# -- after_round -----------------------------------------------------------------------------------
SIZES = np.array([10.0, 30.0, 20.0])


def _ctx(round_: int, arrays: dict[str, Any]) -> RoundContext:
    groups = {g: tuple(arrays[g]) for g in arrays}
    return RoundContext(round_, arrays, groups, 3, SIZES, SPECS, 3, np.random.default_rng(0))


def _arrays(a: list[float], b: list[float]) -> dict[str, dict[str, np.ndarray]]:
    return {"encoder.a": {"w": np.array(a)}, "encoder.b": {"w": np.array(b)}, "head": {"w": np.zeros(1)}}


def _result(cid: int, update: dict[str, Any], report: dict[str, Any]) -> ClientResult:
    return ClientResult(cid, int(SIZES[cid]), update, report, {}, {}, ClientCost())


def _rep(rho: float | None, **protos: tuple[list[float], list[int]]) -> dict[str, Any]:
    out: dict[str, Any] = {} if rho is None else {"bmsfed/rho": rho, "bmsfed/acc/a": 1.0, "bmsfed/acc/b": 1.0}
    for m, (p, n) in protos.items():
        out[f"bmsfed/acc/{m}"] = 1.0
        out[f"bmsfed/prototypes/{m}"] = np.array(p, dtype=np.float32)[:, None]
        out[f"bmsfed/counts/{m}"] = np.array(n)
    return out


def _after_round_one() -> tuple[BMSFed, dict[str, Any]]:
    """Round 1: everyone trains; clients 0, 1 hold a and b, client 2 only b."""
    tech = BMSFed(sketch_dim=0, unit_updates=False)  # sketches = the exact update vectors
    ctx = _ctx(1, _arrays([1, 1], [1]))
    assert list(tech.select_clients(ctx, np.arange(3))) == [0, 1, 2]
    results = [
        # update vectors θ_global − θ_local: a [1, 0], b [−2]; a [0, 2], b [1]; b [2] (a not uploaded)
        _result(0, _arrays([0, 1], [3]), _rep(2.0, a=([1, 2, 0], [1, 3, 0]), b=([0, 1, 0], [0, 2, 0]))),
        _result(1, _arrays([1, -1], [0]), _rep(0.8, a=([4, 0, 0], [3, 0, 0]), b=([2, 0, 0], [1, 0, 0]))),
        _result(2, {"encoder.b": {"w": np.array([-1.0])}}, _rep(None, b=([5, 4, 0], [3, 2, 0]))),
    ]
    metrics: dict[str, Any] = {}
    tech.after_round(ctx.with_results(results), metrics)
    return tech, metrics


def _two_rounds() -> tuple[BMSFed, dict[str, Any]]:
    """Round 1 as above; round 2: client 0 trains only b (S_I), client 1 everything (S_M), 2 is not picked."""
    tech, _ = _after_round_one()
    tech._assignment = {0: "I", 1: "M"}  # what select_clients would have decided
    ctx = _ctx(2, _arrays([0, 0], [0]))
    results = [
        # update vectors: b [3] (a not uploaded); a [−1, −1], b [−1]
        _result(0, {"encoder.b": {"w": np.array([-3.0])}}, _rep(3.0, b=([0, 0, 6], [0, 0, 2]))),
        _result(1, _arrays([1, 1], [1]), _rep(1.0, a=([1, 0, 7], [1, 0, 1]), b=([3, 0, 0], [2, 0, 0]))),
    ]
    metrics: dict[str, Any] = {}
    tech.after_round(ctx.with_results(results), metrics)
    return tech, metrics


def test_after_round_one_rho_bar_weak_modality_and_distances_by_hand() -> None:
    tech, metrics = _after_round_one()
    # ρ̄ over the clients with a ρ only (client 2's size is not in the denominator): (10·2 + 30·0.8) / 40.
    np.testing.assert_array_equal(tech.imbalance_ratios, [2.0, 0.8, NAN])
    assert metrics["bmsfed/rho"] == pytest.approx(1.1, rel=1e-12)
    assert tech.weak_modality == "b"  # ρ̄ > 1: the first modality dominates, the second is weak
    assert metrics["bmsfed/weak_modality_index"] == 1.0
    assert metrics["bmsfed/selected_multimodal"] == 3.0 and metrics["bmsfed/selected_unimodal"] == 0.0
    # Rows: all = [1, 0, −2], [0, 2, 1], [0, 0, 2]; a = [1, 0], [0, 2], never trained [0, 0]; b = −2, 1, 2.
    r14, r17, r5 = math.sqrt(14), math.sqrt(17), math.sqrt(5)
    np.testing.assert_allclose(tech.distance_matrix("all"), [[0, r14, r17], [r14, 0, r5], [r17, r5, 0]])
    np.testing.assert_allclose(tech.distance_matrix("a"), [[0, r5, 1], [r5, 0, 2], [1, 2, 0]])
    np.testing.assert_allclose(tech.distance_matrix("b"), [[0, 3, 4], [3, 0, 1], [4, 1, 0]])


def test_rho_bar_at_most_one_makes_the_first_modality_weak() -> None:
    tech = BMSFed(sketch_dim=0)
    ctx = _ctx(1, _arrays([1, 1], [1]))
    tech.select_clients(ctx, np.arange(3))
    results = [_result(0, _arrays([0, 1], [3]), _rep(1.5)), _result(1, _arrays([1, -1], [0]), _rep(0.5))]
    metrics: dict[str, Any] = {}
    tech.after_round(ctx.with_results(results), metrics)
    assert metrics["bmsfed/rho"] == pytest.approx((10 * 1.5 + 30 * 0.5) / 40, rel=1e-12)  # 0.75
    assert tech.weak_modality == "a" and metrics["bmsfed/weak_modality_index"] == 0.0


def test_after_round_refreshes_only_the_rows_a_client_trained() -> None:
    tech, metrics = _two_rounds()
    # Client 0 (S_I of b) refreshes its b row only: all stays [1, 0, −2], a stays [1, 0], b becomes 3.
    # Client 1 (S_M) refreshes every row: all [−1, −1, −1], a [−1, −1], b −1. Client 2 keeps round 1's.
    r6, r17, r11, r5, r2 = math.sqrt(6), math.sqrt(17), math.sqrt(11), math.sqrt(5), math.sqrt(2)
    np.testing.assert_allclose(tech.distance_matrix("all"), [[0, r6, r17], [r6, 0, r11], [r17, r11, 0]])
    np.testing.assert_allclose(tech.distance_matrix("a"), [[0, r5, 1], [r5, 0, r2], [1, r2, 0]])
    np.testing.assert_allclose(tech.distance_matrix("b"), [[0, 4, 1], [4, 0, 3], [1, 3, 0]])
    # ρ of the round's clients replaced; client 2 keeps NaN. ρ̄ = (10·3 + 30·1) / 40.
    np.testing.assert_array_equal(tech.imbalance_ratios, [3.0, 1.0, NAN])
    assert metrics["bmsfed/rho"] == pytest.approx(1.5, rel=1e-12)
    assert metrics["bmsfed/selected_multimodal"] == 1.0 and metrics["bmsfed/selected_unimodal"] == 1.0


def test_prototype_merge_is_count_weighted_and_keeps_classes_nobody_reported() -> None:
    tech, _ = _after_round_one()
    protos, counts = tech.global_prototypes, tech.state_dict()["counts"]
    # a: class 0 = (1·1 + 3·4) / 4, class 1 = 2 (client 0 alone), class 2 nobody: zero row, count 0.
    np.testing.assert_allclose(protos["a"][:, 0], [13 / 4, 2, 0])
    np.testing.assert_array_equal(counts["a"], [4, 3, 0])
    # b: class 0 = (1·2 + 3·5) / 4, class 1 = (2·1 + 2·4) / 4 (client 2's unimodal report counts too).
    np.testing.assert_allclose(protos["b"][:, 0], [17 / 4, 10 / 4, 0])
    np.testing.assert_array_equal(counts["b"], [4, 4, 0])
    tech, _ = _two_rounds()
    protos, counts = tech.global_prototypes, tech.state_dict()["counts"]
    # Round 2 replaces (does not accumulate) the classes reported; class 1 of a and of b keeps round 1's.
    np.testing.assert_allclose(protos["a"][:, 0], [1, 2, 7])
    np.testing.assert_array_equal(counts["a"], [1, 3, 1])
    np.testing.assert_allclose(protos["b"][:, 0], [3, 10 / 4, 6])
    np.testing.assert_array_equal(counts["b"], [2, 4, 2])


# -- who may join S_I ------------------------------------------------------------------------------
def _selector(weak: str, holds: list[bool], chi: float = 1.2, seen: bool = True) -> BMSFed:
    """After round 1 by hand: client 0 holds a and b (ρ = 1, never passes), client 1 holds ``holds``,
    client 2 the other single modality. Client 1 best covers the weak set, client 0 the whole set."""
    tech = BMSFed(chi=chi, clients_per_round=1, sample_size=3, sketch_dim=0)
    weak_vectors = np.array([[1.0], [0.0], [-1.0]])  # client 1 in the middle
    tech.load_state_dict(
        {
            "num_clients": 3,
            "initialised": True,
            "sketch": {"all": np.array([[0.0], [1.0], [-1.0]]), "a": weak_vectors, "b": weak_vectors},
            "rho": np.array([1.0, NAN, NAN]),
            "has": np.array([[True, True], holds, [not h for h in holds]]) & seen,
            "seen": np.array([True, seen, seen]),
            "prototypes": {},
            "counts": {},
            "weak": weak,
            "assignment": {},
        }
    )
    return tech


@pytest.mark.parametrize(
    ("weak", "holds", "expected"),
    [
        ("b", [False, True], {1: "I"}),  # holds only the weak modality: joins S_I
        ("a", [True, False], {1: "I"}),  # the same when the first modality is the weak one
        ("b", [True, False], {0: "M"}),  # holds only the strong modality: never S_I
        ("a", [False, True], {0: "M"}),
    ],
)
def test_a_client_holding_only_the_weak_modality_can_join_s_i(
    weak: str, holds: list[bool], expected: dict[int, str]
) -> None:
    tech = _selector(weak, holds)
    picked = tech.select_clients(_ctx(2, {}), np.arange(3))
    assert tech.assignment == expected and list(picked) == list(expected)
    if expected == {1: "I"}:
        # It then trains its one modality, as an S_I client does.
        plan = tech.configure(_ctx(2, {}), 1, TrainPlan())
        assert plan.train == (f"encoder.{weak}", "fusion", "head")
        assert [c.modalities for c in plan.combinations] == [(weak,)]


def test_chi_infinite_or_an_unknown_client_keeps_s_i_empty() -> None:
    tech = _selector("b", [False, True], chi=math.inf)
    tech.select_clients(_ctx(2, {}), np.arange(3))
    assert tech.assignment == {0: "M"}
    tech = _selector("b", [False, True], seen=False)  # never reported: what it holds is unknown
    tech.select_clients(_ctx(2, {}), np.arange(3))
    assert tech.assignment == {0: "M"}


# -- no client holds both modalities ---------------------------------------------------------------
def _all_unimodal_round_one(tech: BMSFed) -> None:
    ctx = _ctx(1, _arrays([1, 1], [1]))
    tech.select_clients(ctx, np.arange(3))
    results = [
        _result(0, {"encoder.a": {"w": np.zeros(2)}}, _rep(None, a=([1, 0, 0], [1, 0, 0]))),
        _result(1, {"encoder.b": {"w": np.zeros(1)}}, _rep(None, b=([1, 0, 0], [1, 0, 0]))),
        _result(2, {"encoder.b": {"w": np.zeros(1)}}, _rep(None, b=([0, 1, 0], [0, 1, 0]))),
    ]
    tech.after_round(ctx.with_results(results), {})


def test_no_client_with_both_modalities_warns_once_after_round_one() -> None:
    tech = BMSFed()
    with pytest.warns(RuntimeWarning, match=r"bmsfed: none of the 3 clients .* both modalities") as caught:
        _all_unimodal_round_one(tech)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "DivFL" in text and "S_I" in text and "imbalance ratio" in text
    assert tech.weak_modality is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _all_unimodal_round_one(tech)  # a later round: no second warning
    # Some client with both modalities: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _after_round_one()


def test_an_all_unimodal_federation_warns_in_round_one() -> None:
    data = datasets.load(
        "synthetic", clients=4, unimodal_fraction=1.0, num_samples=120, test_samples=40, num_classes=3, seed=0
    )
    assert all(len(data.client(c).modalities) == 1 for c in range(data.num_clients))
    torch.manual_seed(0)
    encoders = dict.fromkeys(data.modality_names, "mlp")
    model = models.late_fusion(data.modalities, data.num_classes, encoders=encoders)
    strategy = FedAvg(techniques=[BMSFed(clients_per_round=2)], local_epochs=1, batch_size=16, lr=0.05)
    fed = Federation(model, data, strategy, seed=0)
    with pytest.warns(RuntimeWarning, match="DivFL") as caught:
        fed.run(1, progress=False)
    assert len([w for w in caught if "bmsfed" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fed.run(2, progress=False)
