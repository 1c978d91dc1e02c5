"""FedMFS priority, top-γ selection and parameter validation (pure functions, hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmm.core.config import TechniqueSection, build_technique
from fedmm.core.errors import ConfigError
from fedmm.select.fedmfs import FedMFS, normalise, priority, random_gamma, top_gamma


def test_select_fedmfs_priority_hand_computed() -> None:
    phi = np.array([10.0, 2.0, 6.0])
    sizes = np.array([100.0, 1000.0, 400.0])
    avail = np.ones(3, dtype=bool)
    # ϕ̂ = [1, 0, 0.5]; ŝ = [0, 1, 1/3]; P = 0.6 ϕ̂ + 0.4 (1 − ŝ) = [1.0, 0.0, 0.5667]
    p = priority(phi, sizes, avail, alpha_s=0.6, alpha_c=0.4)
    np.testing.assert_allclose(p, [1.0, 0.0, 0.3 + 0.4 * (2 / 3)], atol=1e-8)
    assert top_gamma(p, avail, 1) == [0]
    assert top_gamma(p, avail, 2) == [0, 2]
    assert top_gamma(p, avail, 3) == [0, 1, 2]
    # Shapley only / size only.
    assert top_gamma(priority(phi, sizes, avail, 1.0, 0.0), avail, 1) == [0]
    assert top_gamma(priority(np.array([1.0, 9.0, 5.0]), sizes, avail, 0.0, 1.0), avail, 1) == [0]


def test_select_fedmfs_missing_modalities_and_ties() -> None:
    phi = np.array([10.0, 99.0, 6.0])
    sizes = np.array([100.0, 1.0, 400.0])
    avail = np.array([True, False, True])
    # Normalisation ignores the missing modality: ϕ̂ = [1, ·, 0], ŝ = [0, ·, 1].
    np.testing.assert_allclose(normalise(phi, avail), [1.0, 0.0, 0.0], atol=1e-8)
    p = priority(phi, sizes, avail)
    assert p[1] == -np.inf
    assert top_gamma(p, avail, 3) == [0, 2]  # |U| = min(γ, |M_k|), never the missing one
    # Equal priorities: the lower modality index wins.
    assert top_gamma(np.array([0.5, 0.5, 0.5]), np.ones(3, dtype=bool), 1) == [0]
    # One modality: ϕ̂ = ŝ = 0, still uploaded.
    one = np.array([False, True, False])
    assert top_gamma(priority(phi, sizes, one), one, 1) == [1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        pick = random_gamma(avail, 2, rng)
        assert pick == [0, 2]
        assert random_gamma(avail, 1, rng)[0] in (0, 2)


def test_select_fedmfs_random_ties_only_reorder_equal_priorities() -> None:
    # Sizes alone (α_s = 0): modalities 1 and 2 tie as the smallest, 0 is larger, 3 is missing.
    sizes = np.array([500.0, 100.0, 100.0, 1.0])
    avail = np.array([True, True, True, False])
    p = priority(np.zeros(4), sizes, avail, alpha_s=0.0, alpha_c=1.0)
    assert top_gamma(p, avail, 1) == [1]  # by order, the lower index wins every time
    picks = [top_gamma(p, avail, 1, np.random.default_rng(s))[0] for s in range(200)]
    # Each tied modality is drawn (about half the time each); the larger one and the missing one never.
    assert set(picks) == {1, 2} and 60 < picks.count(1) < 140
    for s in range(50):
        rng = np.random.default_rng(s)
        assert top_gamma(p, avail, 2, rng) == [1, 2]  # both tied ones: nothing to break
        assert top_gamma(p, avail, 3, rng) == [0, 1, 2]
    # Distinct priorities are never reordered by the draw.
    q = np.array([0.9, 0.2, 0.5, -np.inf])
    assert all(top_gamma(q, avail, 1, np.random.default_rng(s)) == [0] for s in range(50))


def test_select_fedmfs_ties_argument_reaches_the_choice() -> None:
    from fedmm.core import datasets
    from fedmm.select.fedmfs import modality_ensemble

    data = datasets.load("synthetic", clients=2, num_samples=40, seed=0)
    model = modality_ensemble(data.modalities, data.num_classes)
    names = [m.name for m in data.modalities]
    sizes = FedMFS._sizes(model, names)
    assert sizes[0] == sizes[1]  # two 8-d vectors, two equal MLPs: size alone cannot choose
    avail = np.ones(2, dtype=bool)
    by_order = FedMFS(gamma=1, alpha_s=0.0, alpha_c=1.0)
    at_random = FedMFS(gamma=1, alpha_s=0.0, alpha_c=1.0, ties="random")
    phi = np.zeros(2)
    assert {tuple(by_order._choose(model, names, phi, avail, s)) for s in range(40)} == {(0,)}
    assert {tuple(at_random._choose(model, names, phi, avail, s)) for s in range(40)} == {(0,), (1,)}
    with pytest.raises(ConfigError, match="ties must be one of 'order', 'random'"):
        FedMFS(ties="first")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 0}, "gamma must be an integer >= 1, got 0"),
        ({"gamma": 1.5}, "gamma must be an integer >= 1, got 1.5"),
        ({"alpha_s": -0.1}, "alpha_s must be a finite number >= 0, got -0.1"),
        ({"alpha_c": float("nan")}, "alpha_c must be a finite number >= 0, got nan"),
        ({"alpha_s": 0.0, "alpha_c": 0.0}, "both 0"),
        ({"shapley": "kernel"}, "shapley must be one of 'tree', 'exact'"),
        ({"n_estimators": 0}, "n_estimators must be an integer >= 1, got 0"),
    ],
)
def test_select_fedmfs_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FedMFS(**kwargs)  # type: ignore[arg-type]


def test_select_fedmfs_config_roundtrip_and_toml() -> None:
    t = FedMFS(gamma=2, alpha_s=0.7, alpha_c=0.3, shapley="exact")
    assert FedMFS(**t.config()).config() == t.config()
    built = build_technique(TechniqueSection(name="fedmfs", gamma=1))  # type: ignore[call-arg]
    assert isinstance(built, FedMFS) and built.args.gamma == 1
    with pytest.raises(ConfigError, match=r"\(fedmfs\)\.gamma: must be an integer >= 1, got 0"):
        build_technique(TechniqueSection(name="fedmfs", gamma=0))  # type: ignore[call-arg]


def test_select_fedmfs_gamma_above_the_modalities_is_refused_when_the_model_is_built() -> None:
    # Was: found only in round 1's configure; create_model runs before any round.
    from fedmm.core import datasets

    data = datasets.load("synthetic", clients=2, num_samples=40, seed=0)
    for model in ("ensemble", "late_fusion"):
        with pytest.raises(
            ConfigError, match=r"FedMFS: gamma = 3 exceeds the number of modalities \(2: a, b\)"
        ):
            FedMFS(gamma=3, model=model).create_model(data, {})  # type: ignore[arg-type]
