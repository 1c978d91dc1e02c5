"""BMSFed selection (spec §3.3): facility location, (stochastic) greedy, the S_M / S_I conflict rule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedmm.core.errors import ConfigError
from fedmm.select.bmsfed.selection import (
    big_constant,
    exhaustive_minimum,
    facility_location,
    greedy_facility_location,
    pairwise_distances,
    stochastic_greedy_bmsfed,
)


def _matrix(n: int, seed: int, dim: int = 4) -> np.ndarray:
    return pairwise_distances(np.random.default_rng(seed).standard_normal((n, dim)))


def _reduction(d: np.ndarray, s: list[int] | tuple[int, ...]) -> float:
    # big − G is the monotone submodular function greedy approximates.
    return facility_location(d, []) - facility_location(d, s)


def test_pairwise_distances_and_objective_by_hand() -> None:
    v = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    d = pairwise_distances(v)
    assert np.allclose(d, [[0, 5, 10], [5, 0, 5], [10, 5, 0]])
    assert facility_location(d, [1]) == pytest.approx(10.0)  # 5 + 0 + 5
    assert facility_location(d, [0, 2]) == pytest.approx(5.0)  # 0 + 5 + 0
    assert facility_location(d, []) == pytest.approx(3 * (10.0 + 1.0))
    assert big_constant(d) == 11.0


@pytest.mark.parametrize("seed", range(5))
def test_exact_greedy_reaches_one_minus_one_over_e_of_the_exhaustive_optimum(seed: int) -> None:
    d = _matrix(9, seed)
    for k in (1, 2, 3, 4):
        best, best_set = exhaustive_minimum(d, k)
        greedy = greedy_facility_location(d, k, rng=None)
        assert len(set(greedy)) == k
        assert _reduction(d, greedy) >= (1 - 1 / math.e) * _reduction(d, best_set) - 1e-9
        assert facility_location(d, greedy) >= best - 1e-9  # nothing beats the optimum


def test_stochastic_greedy_meets_its_guarantee_on_average_over_seeds() -> None:
    d = _matrix(10, 7)
    k, eps = 3, 0.25
    _, best_set = exhaustive_minimum(d, k)
    # |R| = (N/K) log(1/ε) gives the (1 − 1/e − ε) bound in expectation (Mirzasoleiman et al., 2015).
    size = math.ceil(10 / k * math.log(1 / eps))
    values = [
        _reduction(d, greedy_facility_location(d, k, np.random.default_rng(s), size=size)) for s in range(200)
    ]
    assert float(np.mean(values)) >= (1 - 1 / math.e - eps) * _reduction(d, best_set)


def _divfl_reference(d: np.ndarray, k: int, rng: np.random.Generator, size: int) -> list[int]:
    """Plain DivFL stochastic greedy written independently (no running minimum)."""
    chosen: list[int] = []
    remaining = list(range(d.shape[0]))
    for _ in range(k):
        pool = (
            remaining if size >= len(remaining) else sorted(rng.choice(remaining, size=size, replace=False))
        )
        scores = [facility_location(d, [*chosen, int(c)]) for c in pool]
        pick = int(pool[int(np.argmin(scores))])
        chosen.append(pick)
        remaining.remove(pick)
    return chosen


@pytest.mark.parametrize("seed", range(4))
def test_chi_infinite_is_plain_divfl_stochastic_greedy(seed: int) -> None:
    d_m, d_i = _matrix(15, seed), _matrix(15, seed + 100)
    rho = np.full(15, 10.0)  # every client would pass any finite threshold
    sel = stochastic_greedy_bmsfed(d_m, d_i, rho, 5, np.random.default_rng(seed), chi=math.inf, size=4)
    ref = _divfl_reference(d_m, 5, np.random.default_rng(seed), 4)
    assert sel.unimodal == []
    assert sel.multimodal == ref


@pytest.mark.parametrize("weak_is_second", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_sets_are_disjoint_sum_to_k_and_respect_chi(seed: int, weak_is_second: bool) -> None:
    n, k, chi = 20, 7, 1.5
    rng = np.random.default_rng(seed)
    rho = rng.uniform(0.3, 3.0, n)
    rho[rng.choice(n, 3, replace=False)] = np.nan  # unknown ratio: never S_I
    sel = stochastic_greedy_bmsfed(
        _matrix(n, seed),
        _matrix(n, seed + 50),
        rho,
        k,
        np.random.default_rng(seed),
        chi=chi,
        weak_is_second=weak_is_second,
        coincide_to_multimodal=False,
    )
    assert len(sel.multimodal) + len(sel.unimodal) == k
    assert not set(sel.multimodal) & set(sel.unimodal)
    assert len(set(sel.clients)) == k
    for c in sel.unimodal:
        assert rho[c] > chi if weak_is_second else rho[c] < 1 / chi


def test_some_clients_do_enter_s_i_when_they_pass() -> None:
    n = 12
    sel = stochastic_greedy_bmsfed(
        _matrix(n, 1), _matrix(n, 2), np.full(n, 5.0), 6, None, chi=1.5, coincide_to_multimodal=False
    )
    assert sel.unimodal  # with exact greedy on independent matrices, S_I gets picks


def test_a_client_holding_only_the_weak_modality_passes_the_conflict_rule() -> None:
    # Client 1 wins G_I but its ρ is NaN (it holds one modality); client 0 wins G_M.
    d_multi = pairwise_distances(np.array([[0.0], [1.0], [-1.0]]))
    d_weak = pairwise_distances(np.array([[1.0], [0.0], [-1.0]]))
    rho = np.array([1.0, np.nan, np.nan])
    weak_only = np.array([False, True, False])
    for weak_is_second in (True, False):
        sel = stochastic_greedy_bmsfed(
            d_multi, d_weak, rho, 1, None, chi=1.2, weak_is_second=weak_is_second, weak_only=weak_only
        )
        assert (sel.multimodal, sel.unimodal) == ([], [1])
    # Without the mask the NaN never passes; with χ = ∞ there is no S_I at all (plain DivFL).
    assert stochastic_greedy_bmsfed(d_multi, d_weak, rho, 1, None, chi=1.2).multimodal == [0]
    divfl = stochastic_greedy_bmsfed(d_multi, d_weak, rho, 1, None, chi=math.inf, weak_only=weak_only)
    assert (divfl.multimodal, divfl.unimodal) == ([0], [])
    # A client that wins both objectives still goes to S_M under the slides' rule.
    same = stochastic_greedy_bmsfed(d_weak, d_weak, rho, 1, None, chi=1.2, weak_only=weak_only)
    assert (same.multimodal, same.unimodal) == ([1], [])
    with pytest.raises(ConfigError, match="weak_only"):
        stochastic_greedy_bmsfed(d_multi, d_weak, rho, 1, None, chi=1.2, weak_only=np.ones(2, bool))


def test_objectives_are_non_increasing_as_picks_grow() -> None:
    n = 25
    rho = np.random.default_rng(3).uniform(0.5, 3.0, n)
    sel = stochastic_greedy_bmsfed(_matrix(n, 3), _matrix(n, 4), rho, 10, np.random.default_rng(0), chi=1.2)
    for g in (sel.g_multimodal, sel.g_unimodal):
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(g))


def test_candidates_restrict_picks_and_k_is_clamped() -> None:
    d = _matrix(10, 0)
    sel = stochastic_greedy_bmsfed(
        d, d, np.ones(10), 5, np.random.default_rng(0), chi=1.0, candidates=np.array([2, 4, 6])
    )
    assert sel.clients == [2, 4, 6]


def test_bad_arguments_raise_config_errors() -> None:
    d = _matrix(4, 0)
    with pytest.raises(ConfigError, match="chi"):
        stochastic_greedy_bmsfed(d, d, np.ones(4), 2, None, chi=0.5)
    with pytest.raises(ConfigError, match="square"):
        stochastic_greedy_bmsfed(np.ones((3, 4)), d, np.ones(4), 2, None, chi=1.5)
    with pytest.raises(ConfigError, match="rho"):
        stochastic_greedy_bmsfed(d, d, np.ones(3), 2, None, chi=1.5)
    with pytest.raises(ConfigError, match="k must"):
        stochastic_greedy_bmsfed(d, d, np.ones(4), 0, None, chi=1.5)
    with pytest.raises(ConfigError, match="same shape"):
        stochastic_greedy_bmsfed(d, _matrix(5, 0), np.ones(4), 2, None, chi=1.5)
