"""The FedMVP technique: completion once per client, frozen extractors, MCM/RAM, CKA aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmm.completion.fedmvp.completion import PoolCompleter
from fedmm.completion.fedmvp.model import FedMVPModel
from fedmm.completion.fedmvp.technique import FedMVP
from fedmm.core import FedAvg, Federation, datasets
from fedmm.core.arrays import get_arrays
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.protocol import ClientResult, Technique, check_techniques


@pytest.fixture(scope="module")
def data() -> FederatedDataset:
    return datasets.load(
        "synthetic",
        clients=3,
        partition="iid",
        num_samples=300,
        test_samples=90,
        incomplete_fraction=0.8,
        validation_fraction=0.2,
        seed=0,
    )


def _model(data: FederatedDataset) -> FedMVPModel:
    torch.manual_seed(0)
    extractors = {m.name: nn.Sequential(nn.Linear(m.shape[0], 8), nn.ReLU()) for m in data.modalities}
    return FedMVPModel(
        data.modalities, extractors, dict.fromkeys(["a", "b"], 8), data.num_classes, dim=16, layers=1, heads=2
    )


def test_frozen_extractors_are_no_group_and_never_change(data: FederatedDataset) -> None:
    model = _model(data)
    assert set(model.parameter_groups()) == {"encoder.a", "encoder.b", "fusion", "head"}
    before = {m: [p.detach().clone() for p in e.parameters()] for m, e in model.frozen.items()}
    tech = FedMVP(completer=PoolCompleter(data.validation), probe=data.validation)
    fed = Federation(model, data, FedAvg([tech], optimizer="adam", lr=1e-2), seed=0)
    history = fed.run(2, progress=False)
    for m, e in fed.model.frozen.items():
        assert all(torch.equal(a, b) for a, b in zip(before[m], e.parameters(), strict=True))
    # Nothing of the extractors crossed: the ledger's groups are the learnable ones only.
    for rec in history.ledger.records:
        assert set(rec.groups_up) <= {"encoder.a", "encoder.b", "fusion", "head"}
    assert all(np.isfinite(r["accuracy"]) for r in history.rounds)


def test_completion_runs_once_per_client_and_marks_generated(data: FederatedDataset) -> None:
    tech = FedMVP(completer=PoolCompleter(data.validation), probe=data.validation)
    fed = Federation(_model(data), data, FedAvg([tech], optimizer="adam", lr=1e-2), seed=0)
    fed.run(2, progress=False)
    for cid in range(data.num_clients):
        state = fed.client_states[cid]
        present, generated = state["fedmvp/completed/present"], state["fedmvp/completed/generated"]
        assert present.all()  # every missing slot was filled
        np.testing.assert_array_equal(generated, ~data.client(cid).present())  # and marked generated
    # The cost of completing appears once per client: on its first round, with real time spent.
    first = [r for r in fed.history.ledger.records if r.round == 1]
    again = [r for r in fed.history.ledger.records if r.round == 2]
    assert all(r.seconds_by_hook["prepare"] > 0 for r in first)
    assert sum(r.seconds_by_hook["prepare"] for r in again) < sum(r.seconds_by_hook["prepare"] for r in first)


def test_augmenting_completion_trains_on_the_copies_and_caches_them(data: FederatedDataset) -> None:
    tech = FedMVP(completer=PoolCompleter(data.validation, copies=3), probe=data.validation)
    fed = Federation(_model(data), data, FedAvg([tech], optimizer="adam", lr=1e-2), seed=0)
    history = fed.run(2, progress=False)
    for cid in range(data.num_clients):
        own = data.client(cid)
        incomplete = int((~own.present().all(axis=1)).sum())
        state = fed.client_states[cid]
        assert state["fedmvp/completed/labels"].shape[0] == own.num_samples + 2 * incomplete
        assert state["fedmvp/completed/generated"].shape[0] == own.num_samples + 2 * incomplete
    # Both rounds (the second from the cache) trained on the augmented set.
    by_round = {r: sorted(c.steps for c in history.ledger.records if c.round == r) for r in (1, 2)}
    assert by_round[1] == by_round[2]
    plain = Federation(
        _model(data),
        data,
        FedAvg(
            [FedMVP(completer=PoolCompleter(data.validation), probe=data.validation)],
            optimizer="adam",
            lr=1e-2,
        ),
        seed=0,
    ).run(1, progress=False)
    assert sum(by_round[1]) > sum(c.steps for c in plain.ledger.records)


def test_cka_weights_are_uniform_for_identical_clients_and_lowest_for_a_stranger(
    data: FederatedDataset,
) -> None:
    model = _model(data)
    fed = Federation(model, data, FedAvg(), seed=0)
    ctx = fed.context(1).with_results(())
    tech = FedMVP(probe=data.validation)
    same = ClientResult(0, 10, get_arrays(model), {}, {}, {}, None)  # type: ignore[arg-type]
    weights = tech.client_weights(ctx, [same, same, same])
    np.testing.assert_allclose(weights, [1 / 3] * 3)
    torch.manual_seed(123)
    stranger = _model(data)
    for p in stranger.parameters():
        nn.init.normal_(p, std=1.0)
    odd = ClientResult(2, 10, get_arrays(stranger), {}, {}, {}, None)  # type: ignore[arg-type]
    weights = tech.client_weights(ctx, [same, same, odd])
    assert weights.argmin() == 2 and weights.sum() == pytest.approx(1.0)


def test_cka_aggregation_applies_sample_weighted_cka_weights(data: FederatedDataset) -> None:
    model = _model(data)
    fed = Federation(model, data, FedAvg(), seed=0)
    base = get_arrays(model)
    stranger = _model(data)
    torch.manual_seed(7)
    for p in stranger.parameters():
        nn.init.normal_(p, std=0.5)
    other = get_arrays(stranger)  # same architecture, other weights
    results = [
        ClientResult(0, 30, base, {}, {}, {}, None),  # type: ignore[arg-type]
        ClientResult(1, 10, other, {}, {}, {}, None),  # type: ignore[arg-type]
        ClientResult(2, 0, other, {}, {}, {}, None),  # type: ignore[arg-type]  (trained on nothing)
    ]
    ctx = fed.context(1).with_results(results)
    tech = FedMVP(probe=data.validation)
    weights = tech.client_weights(ctx, results)
    degree = FedMVP(probe=data.validation, cka_weights="degree").client_weights(ctx, results)
    # w ∝ a_i n_i: the empty client gets nothing; the others keep the degree ratio times 30 : 10.
    assert weights[2] == 0.0 and degree[2] > 0.2
    assert weights[0] / weights[1] == pytest.approx(3 * degree[0] / degree[1])
    merged = tech.aggregate(ctx, results)
    assert merged is not None and tech.last_weights is not None
    np.testing.assert_allclose(tech.last_weights, weights)
    for g, arrays in merged.items():
        for k, v in arrays.items():
            expect = weights[0] * base[g][k] + weights[1] * other[g][k] + weights[2] * other[g][k]
            np.testing.assert_allclose(v, expect, rtol=1e-5, atol=1e-6)


def test_built_by_create_model_from_the_public_split(data: FederatedDataset) -> None:
    tech = FedMVP(extractor_epochs=2, dim=16)
    strategy = FedAvg([tech], optimizer="adam", lr=1e-2)
    model = strategy.create_model(data, {})
    assert isinstance(model, FedMVPModel) and tech.probe is data.validation
    history = Federation(model, data, strategy, seed=0).run(1, progress=False)
    assert 0 < history.rounds[-1]["fedmvp/cka_weight_min"] <= history.rounds[-1]["fedmvp/cka_weight_max"]
    no_public = datasets.load("synthetic", clients=2, partition="iid", num_samples=100, seed=0)
    with pytest.raises(ConfigError, match="validation_fraction"):
        FedMVP().create_model(no_public, {})


def test_bad_parameters_are_clear_errors(data: FederatedDataset) -> None:
    with pytest.raises(
        ConfigError, match="completion must be one of 'pool', 'generative', 'foundation', 'none', got 'magic'"
    ):
        FedMVP(completion="magic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no pool yet"):
        Federation(_model(data), data, FedAvg([FedMVP()]), seed=0).run(1, progress=False)
    with pytest.raises(ConfigError, match="probe set"):
        Federation(_model(data), data, FedAvg([FedMVP(completion="none")]), seed=0).run(1, progress=False)
    with pytest.raises(ConfigError, match="aggregation must be"):
        FedMVP(aggregation="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mcm_weight"):
        FedMVP(aggregation="fedavg", mcm_weight=-1)


def test_dtype_and_device_moves_reach_the_frozen_extractors(data: FederatedDataset) -> None:
    model = _model(data).double()
    assert all(p.dtype == torch.float64 for e in model.frozen.values() for p in e.parameters())
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_pre_training_is_announced_unless_quiet(
    data: FederatedDataset, caplog: pytest.LogCaptureFixture
) -> None:
    # Pre-training the extractors is the silent part of building FedMVP's model (issue 15).
    with caplog.at_level("INFO", logger="fedmm"):
        FedMVP(extractor_epochs=1, dim=16, progress=True).create_model(data, {})
        loud = [r.getMessage() for r in caplog.records]
        caplog.clear()
        FedMVP(extractor_epochs=1, dim=16, progress=False).create_model(data, {})
    assert loud == ["FedMVP: pre-training the frozen extractors (a, b) on the 60 public samples, 1 epoch(s)…"]
    assert caplog.records == []


def _built(arguments: dict[str, object]) -> str:
    """The error of building FedMVP from a config's [[techniques]] table."""
    from fedmm.core.config import build_technique, parse_config

    cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "fedmvp", **arguments}]})
    with pytest.raises(ConfigError) as info:
        build_technique(cfg.techniques[0])
    return str(info.value)


def test_a_completer_string_is_refused_when_built_with_the_completion_choices() -> None:
    # Was: accepted, then AttributeError "'str' object has no attribute 'complete'" in round 1.
    message = _built({"completer": "foo"})
    assert message.startswith("[[techniques]] #1 (fedmvp).completer: takes a completer object")
    assert "completion = 'pool', 'foundation' or 'none'" in message
    assert _built({"probe": "public"}).startswith("[[techniques]] #1 (fedmvp).probe: takes a SampleSet")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"dim": "64"}, "(fedmvp).dim: must be an integer >= 1, got '64'"),
        ({"copies": 0}, "(fedmvp).copies: must be an integer >= 1, got 0"),
        ({"temperature": "high"}, "(fedmvp).temperature: must be a finite number > 0, got 'high'"),
        ({"progress": "yes"}, "(fedmvp).progress: must be true or false, got 'yes'"),
        ({"clip_path": "./no/such/clip"}, "(fedmvp).clip_path: './no/such/clip' does not exist"),
    ],
)
def test_every_fedmvp_argument_is_checked_when_built(arguments: dict[str, object], message: str) -> None:
    # Were: TypeError/ValueError from int()/float(), or failures once the model or round 1 ran.
    assert message in _built(arguments)


class _Averages(Technique):
    """Another technique with an aggregate step of its own."""

    name = "averages"

    def aggregate(self, ctx: object, results: object) -> None:  # type: ignore[override]
        return None


def test_fedavg_aggregation_owns_no_aggregate_step() -> None:
    # What FedMVP owns follows its arguments: with aggregation="fedavg" it leaves the step to others.
    assert "aggregate" in FedMVP().owned() and "aggregate" not in FedMVP(aggregation="fedavg").owned()
    check_techniques([FedMVP(aggregation="fedavg"), _Averages()])
    with pytest.raises(
        ConfigError, match="'fedmvp' and 'averages' cannot be combined: both own the 'aggregate'"
    ):
        check_techniques([FedMVP(), _Averages()])


def test_generative_completion_is_trained_by_the_server_shipped_once_and_charged(
    data: FederatedDataset,
) -> None:
    from fedmm.completion.fedmvp.generators import GenerativeCompleter

    tech = FedMVP(completion="generative", extractor_epochs=1, generator_epochs=2, generator_hidden=8, dim=16)
    strategy = FedAvg([tech], optimizer="adam", lr=1e-2)
    model = strategy.create_model(data, {})
    assert isinstance(tech.completer, GenerativeCompleter) and not tech.completer.fitted
    assert tech.probe is None  # made with the generator once the server has trained it
    fed = Federation(model, data, strategy, seed=0)
    history = fed.run(2, progress=False)
    assert tech.completer.fitted and tech.shipped == set(range(data.num_clients))
    # The probe: the public pairs, one modality of each generated by the server's generator.
    assert tech.probe is not None and tech.probe.generated.sum(axis=1).tolist() == [1] * len(tech.probe)
    # Pre-training ran in the server's round-1 configure, and the ledger charged it there.
    per_round = history.ledger.per_round()
    assert per_round[1]["server_flops/configure"] > 0 and per_round[2]["server_flops/configure"] == 0
    # Each client downloaded the generator once: round 1's download exceeds round 2's by its size.
    gen_bytes = sum(v.nbytes for v in tech.completer.arrays().values())
    down = {r: sorted(c.bytes_down for c in history.ledger.records if c.round == r) for r in (1, 2)}
    assert [a - b for a, b in zip(down[1], down[2], strict=True)] == [gen_bytes] * data.num_clients
    # Every client completed its missing values with the generator, in prepare, on round 1.
    for cid in range(data.num_clients):
        state = fed.client_states[cid]
        np.testing.assert_array_equal(state["fedmvp/completed/generated"], ~data.client(cid).present())
    assert all(r.seconds_by_hook["prepare"] > 0 for r in history.ledger.records if r.round == 1)
    assert tech.state_dict() == {"shipped": list(range(data.num_clients))}
