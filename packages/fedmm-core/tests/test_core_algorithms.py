"""FedProx, FedAvgM and the FedOpt family: identities with FedAvg, hand-computed steps, composition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedmm.core import FedAvg, Federation, datasets, models
from fedmm.core.algorithms import FedAdagrad, FedAdam, FedAvgM, FedProx, FedYogi, server_optimizer
from fedmm.core.arrays import get_arrays
from fedmm.core.errors import ArgumentError, ConfigError


@pytest.fixture(scope="module")
def data() -> Any:
    return datasets.load("synthetic", clients=4, partition="dirichlet", alpha=0.3, num_samples=200, seed=0)


def _run(
    data: Any, techniques: list[Any] = (), rounds: int = 3, **strategy: Any
) -> dict[str, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    model = models.late_fusion(data.modalities, data.num_classes, embed_dim=8, hidden=8)
    fed = Federation(model, data, FedAvg(list(techniques), lr=0.1, **strategy), seed=1)
    fed.run(rounds, progress=False)
    return get_arrays(fed.model)


def _same(a: dict[str, dict[str, np.ndarray]], b: dict[str, dict[str, np.ndarray]]) -> bool:
    return all(np.array_equal(a[g][k], b[g][k]) for g in a for k in a[g])


def test_fedprox_mu_zero_and_fedavgm_momentum_zero_are_fedavg_bit_for_bit(data: Any) -> None:
    plain = _run(data)
    assert _same(_run(data, [FedProx(mu=0.0)]), plain)
    assert _same(_run(data, server_optimizer=FedAvgM(momentum=0.0, server_lr=1.0)), plain)
    # And the algorithms do change the run when switched on.
    assert not _same(_run(data, [FedProx(mu=1.0)]), plain)
    assert not _same(_run(data, server_optimizer=FedAvgM(momentum=0.9)), plain)


def test_fedprox_keeps_local_training_closer_to_the_global_model(data: Any) -> None:
    torch.manual_seed(0)
    start = get_arrays(models.late_fusion(data.modalities, data.num_classes, embed_dim=8, hidden=8))

    def drift(mu: float) -> float:
        after = _run(data, [FedProx(mu=mu)] if mu else [], rounds=1, local_epochs=5)
        return sum(float(((after[g][k] - start[g][k]) ** 2).sum()) for g in start for k in start[g])

    assert drift(5.0) < 0.5 * drift(0.0)


def _step(opt: Any, x: np.ndarray, avg: np.ndarray) -> np.ndarray:
    out = opt.step({"g": {"w": x}}, {"g": {"w": avg}}, updated={"g"})
    return out["g"]["w"]


def test_fedadam_first_step_matches_a_hand_computed_case() -> None:
    x = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    avg = np.array([1.5, -2.0, 0.0], dtype=np.float32)
    opt = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
    # Δ = (0.5, 0, -0.5); m = 0.1 Δ; v = 0.99 τ² + 0.01 Δ² = (0.002599, 0.000099, 0.002599)
    # x + 0.1 m / (√v + τ): (1 + 0.005/(0.05098 + 0.01), -2, 0.5 − 0.005/(0.05098 + 0.01))
    step = 0.1 * 0.05 / (np.sqrt(0.99 * 1e-4 + 0.01 * 0.25) + 0.01)
    np.testing.assert_allclose(_step(opt, x, avg), [1.0 + step, -2.0, 0.5 - step], rtol=1e-6)
    assert _step(opt, x, avg).dtype == np.float32


def test_yogi_and_adagrad_second_moments_and_momentum() -> None:
    x, avg = np.array([0.0]), np.array([1.0])
    yogi, ada = (
        FedYogi(server_lr=1.0, beta1=0.0, beta2=0.5, tau=0.1),
        FedAdagrad(server_lr=1.0, beta1=0.0, tau=0.1),
    )
    # v0 = τ² = 0.01 < Δ² = 1: Yogi v = 0.01 + 0.5 · 1 = 0.51; Adagrad v = 0.01 + 1 = 1.01.
    np.testing.assert_allclose(_step(yogi, x, avg), [1.0 / (np.sqrt(0.51) + 0.1)])
    np.testing.assert_allclose(_step(ada, x, avg), [1.0 / (np.sqrt(1.01) + 0.1)])
    m = FedAvgM(server_lr=1.0, momentum=0.5)
    first = _step(m, x, avg)  # v = 1 → x = 1
    second = _step(m, first, first + 1.0)  # v = 0.5 + 1 → x = 1 + 1.5
    np.testing.assert_allclose([first[0], second[0]], [1.0, 2.5])


def test_a_group_nobody_uploaded_stays_bit_exact_and_counters_pass_through() -> None:
    opt = FedAdam(server_lr=0.5)
    prev = {"a": {"w": np.ones(2, np.float32)}, "b": {"w": np.full(2, 3.0, np.float32), "n": np.array([4])}}
    avg = {"a": {"w": np.zeros(2, np.float32)}, "b": {"w": np.full(2, 2.0, np.float32), "n": np.array([5])}}
    out = opt.step(prev, avg, updated={"b"})
    assert out["a"]["w"] is avg["a"]["w"] and "a.w" not in str(opt.state)
    assert out["b"]["n"][0] == 5 and not np.array_equal(out["b"]["w"], prev["b"]["w"])


def test_server_optimizer_state_round_trips_through_the_strategy(data: Any) -> None:
    strategy = FedAvg(lr=0.1, server_optimizer=FedAdam(server_lr=0.05))
    torch.manual_seed(0)
    fed = Federation(
        models.late_fusion(data.modalities, data.num_classes, embed_dim=8, hidden=8), data, strategy, seed=0
    )
    fed.run(2, progress=False)
    state = strategy.state_dict()
    assert "server_optimizer" in state and state["server_optimizer"]["state"]
    other = FedAvg(lr=0.1, server_optimizer=FedAdam(server_lr=0.05))
    other.load_state_dict(state)
    assert other.server_optimizer is not None
    for key, slots in strategy.server_optimizer.state.items():  # type: ignore[union-attr]
        for name, value in slots.items():
            np.testing.assert_array_equal(other.server_optimizer.state[key][name], value)
    assert "FedAdam(server_lr=0.05" in repr(strategy)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FedProx(mu=-0.1), "fedprox: mu must be a finite number >= 0, got -0.1"),
        (lambda: FedAdam(beta1=1.0), r"FedAdam: beta1 must be a finite number in \[0, 1\), got 1.0"),
        (lambda: FedYogi(beta2=-0.5), "FedYogi: beta2 must be"),
        (lambda: FedAvgM(server_lr=0.0), r"FedAvgM: server_lr must be a finite number > 0, got 0.0"),
        (lambda: FedAdagrad(tau=0), "FedAdagrad: tau must be"),
    ],
)
def test_out_of_range_arguments_are_one_clear_error(build: Any, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        build()


def test_server_optimizer_by_name() -> None:
    assert isinstance(server_optimizer("fedyogi", server_lr=0.1), FedYogi)
    with pytest.raises(
        ConfigError, match="unknown server optimizer 'fedsgd'; choose one of fedadagrad, fedadam"
    ):
        server_optimizer("fedsgd")
    with pytest.raises(ConfigError, match="server optimizer 'fedavgm'"):
        server_optimizer("fedavgm", beta1=0.9)


def test_a_config_picks_the_server_optimizer_and_fedprox() -> None:
    from fedmm.core.config import parse_config
    from fedmm.core.runner import build_strategy

    base: dict[str, Any] = {"data": {"name": "synthetic"}}
    cfg = parse_config({**base, "strategy": {"name": "fedadam", "server_lr": 0.02, "tau": 0.001}})
    strategy = build_strategy(cfg, progress=False)
    assert isinstance(strategy.server_optimizer, FedAdam)
    assert strategy.server_optimizer.config() == {
        "server_lr": 0.02,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 0.001,
    }
    cfg = parse_config({**base, "strategy": {"name": "fedavgm", "server_momentum": 0.5}})
    opt = build_strategy(cfg, progress=False).server_optimizer
    assert isinstance(opt, FedAvgM) and opt.momentum == 0.5
    assert build_strategy(parse_config(base), progress=False).server_optimizer is None
    cfg = parse_config({**base, "techniques": [{"name": "fedprox", "mu": 0.1}]})
    (prox,) = build_strategy(cfg, progress=False).techniques
    assert isinstance(prox, FedProx) and prox.args.mu == 0.1
    with pytest.raises(ConfigError, match=r"beta1 do\(es\) not apply to name = 'fedavg'"):
        parse_config({**base, "strategy": {"beta1": 0.9}})
    with pytest.raises(ConfigError, match="beta2 do"):
        parse_config({**base, "strategy": {"name": "fedavgm", "beta2": 0.9}})
    with pytest.raises(ConfigError, match="server_lr"):
        parse_config({**base, "strategy": {"name": "fedadam", "server_lr": 0}})
    with pytest.raises(ConfigError, match="name"):
        parse_config({**base, "strategy": {"name": "fedsgd"}})


def test_scaffold_control_variates_on_a_two_client_quadratic_match_the_closed_form() -> None:
    from fedmm.core.algorithms.scaffold import control_variate_update

    # Client i minimises f_i(θ) = ½ (θ − b_i)², K steps of corrected GD (g − c_i + c) from x.
    b, x, lr, steps = np.array([1.0, -3.0]), 0.5, 0.1, 7
    c_i, c = np.zeros(2), 0.0
    for _round in range(3):
        ys = []
        for i in range(2):
            y = x
            for _ in range(steps):
                y = y - lr * ((y - b[i]) - c_i[i] + c)
            ys.append(y)
        new = np.array([control_variate_update(c_i[i], c, x, ys[i], steps, lr) for i in range(2)])
        # Closed form of K corrected steps: y = b' + (1 − η)^K (x − b'), b' = b + c_i − c, so
        # c_i⁺ = c_i − c + (1 − (1 − η)^K)(x − b') / (K η).
        shifted = b + c_i - c
        closed = c_i - c + (1 - (1 - lr) ** steps) * (x - shifted) / (steps * lr)
        np.testing.assert_allclose(new, closed, rtol=1e-12)
        c = c + (new - c_i).sum() / 2  # the server: c + (1/N) Σ Δc_i, both clients
        c_i = new
        x = float(np.mean(ys))
    # The control variates estimate each client's gradient at x (drift), and c their mean.
    assert c == pytest.approx(c_i.mean(), abs=1e-9)


def test_scaffold_in_a_federation_charges_its_variates_and_updates_c(data: Any) -> None:
    from fedmm.core.algorithms import Scaffold

    tech = Scaffold()
    torch.manual_seed(0)
    model = models.late_fusion(data.modalities, data.num_classes, embed_dim=8, hidden=8)
    fed = Federation(model, data, FedAvg([tech], lr=0.1), seed=0)
    history = fed.run(1, progress=False)
    reports = [fed.reports[c] for c in range(data.num_clients)]
    for key, c in tech.c.items():
        deltas = [r[f"scaffold/dc/{key}"] for r in reports if f"scaffold/dc/{key}" in r]
        if deltas:
            np.testing.assert_allclose(c, np.sum(deltas, axis=0) / data.num_clients, rtol=1e-5, atol=1e-7)
    # The client keeps c_i (= Δc_i after one round from 0), and both directions carry the variates.
    key = next(k for k in tech.c if np.abs(tech.c[k]).sum() > 0)
    np.testing.assert_allclose(fed.client_states[0][f"scaffold/ci/{key}"], reports[0][f"scaffold/dc/{key}"])
    c_bytes = sum(v.nbytes for v in tech.c.values())
    plain = Federation(
        models.late_fusion(data.modalities, data.num_classes, embed_dim=8, hidden=8),
        data,
        FedAvg(lr=0.1),
        seed=0,
    ).run(1, progress=False)
    down = sum(r.bytes_down for r in history.ledger.records) - sum(r.bytes_down for r in plain.ledger.records)
    assert down == c_bytes * data.num_clients
    assert sum(r.bytes_up for r in history.ledger.records) > sum(r.bytes_up for r in plain.ledger.records)
    assert tech.state_dict()["c"].keys() == tech.c.keys()


def test_fednova_is_fedavg_with_equal_steps_and_normalises_unequal_ones(data: Any) -> None:
    from fedmm.core.algorithms import FedNova
    from fedmm.core.algorithms.fednova import effective_steps
    from fedmm.core.ledger import ClientCost
    from fedmm.core.protocol import ClientResult

    torch.manual_seed(0)
    model = models.late_fusion(data.modalities, data.num_classes, embed_dim=8, hidden=8)
    fed = Federation(model, data, FedAvg(), seed=0)
    x = get_arrays(model)
    g = next(iter(x))
    k = next(iter(x[g]))
    y1 = {g: {kk: v + 1.0 for kk, v in x[g].items()}}
    y2 = {g: {kk: v - 3.0 for kk, v in x[g].items()}}

    def result(cid: int, n: int, update: Any, steps: int) -> ClientResult:
        cost = ClientCost(client_id=cid, round=1)
        cost.steps = steps
        return ClientResult(cid, n, update, {}, {}, {}, cost)

    nova = FedNova()
    ctx = fed.context(1).with_results(())
    equal = nova.aggregate(ctx, [result(0, 30, y1, 10), result(1, 10, y2, 10)])
    assert equal is not None
    np.testing.assert_allclose(equal[g][k], x[g][k] + 0.75 * 1.0 + 0.25 * -3.0, atol=1e-6)  # FedAvg
    # Steps 10 and 40: d = (−1/10, 3/40), τ_eff = 0.75·10 + 0.25·40 = 17.5, x − τ_eff Σ p d.
    uneven = nova.aggregate(ctx, [result(0, 30, y1, 10), result(1, 10, y2, 40)])
    assert uneven is not None
    shift = -17.5 * (0.75 * (-1.0 / 10) + 0.25 * (3.0 / 40))
    np.testing.assert_allclose(uneven[g][k], x[g][k] + shift, atol=1e-6)
    # Heavy-ball momentum ρ: a = (τ − ρ (1 − ρ^τ) / (1 − ρ)) / (1 − ρ).
    assert effective_steps(3, 0.5) == pytest.approx((3 - 0.5 * (1 - 0.125) / 0.5) / 0.5)
    assert effective_steps(5) == 5.0
