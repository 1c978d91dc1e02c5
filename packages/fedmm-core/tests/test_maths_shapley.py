"""Shapley values of modality games against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedmm.core.errors import ConfigError, DataError
from fedmm.core.maths import (
    minmax_normalize,
    normalize_nonnegative,
    shapley_exact,
    shapley_monte_carlo,
    shapley_values,
)


class CountingGame:
    """A game that records how often each coalition is evaluated."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: dict[frozenset[str], int] = {}

    def __call__(self, coalition: frozenset[str]) -> float:
        assert isinstance(coalition, frozenset)
        self.calls[coalition] = self.calls.get(coalition, 0) + 1
        return self.fn(coalition)


def additive(weights: dict[str, float], base: float = 0.0):
    return lambda t: base + sum(weights[p] for p in t)


def glove(t: frozenset[str]) -> float:
    # 'L' owns a left glove, 'R1' and 'R2' a right glove each; a pair is worth 1.
    return float(min(int("L" in t), int("R1" in t) + int("R2" in t)))


def four_player(t: frozenset[str]) -> float:
    # Non-additive game with interactions, used for the Monte-Carlo and backend checks.
    s = 0.3 * ("a" in t) + 0.1 * ("b" in t) + 0.2 * ("c" in t) - 0.05 * ("d" in t)
    s += 0.25 * ("a" in t and "b" in t) + 0.4 * ("c" in t and "d" in t) - 0.1 * ("a" in t and "c" in t)
    s += 0.3 * (len(t) >= 3)
    return s


def test_two_player_hand_computed():
    # v(∅)=0, v(a)=1, v(b)=2, v(ab)=5: φ_a = ½[(1−0)+(5−2)] = 2, φ_b = ½[(2−0)+(5−1)] = 3.
    table = {(): 0.0, ("a",): 1.0, ("b",): 2.0, ("a", "b"): 5.0}
    phi = shapley_exact(lambda t: table[tuple(sorted(t))], ["a", "b"])
    assert phi == pytest.approx({"a": 2.0, "b": 3.0}, abs=1e-12)


def test_additive_game_gives_own_value():
    w = {"img": 0.4, "audio": -0.1, "text": 0.25}
    phi = shapley_exact(additive(w, base=7.0), list(w))
    assert phi == pytest.approx(w, abs=1e-12)


def test_glove_game():
    # Hand computation over the 6 join orders: L adds 1 whenever a right glove came before it
    # (4 orders) → 2/3; R1 adds 1 only in the order (L, R1, R2) → 1/6; R2 likewise → 1/6.
    phi = shapley_exact(glove, ["L", "R1", "R2"])
    assert phi == pytest.approx({"L": 2 / 3, "R1": 1 / 6, "R2": 1 / 6}, abs=1e-12)


def test_symmetric_majority_game():
    # 3-player majority game: any 2 players win. By symmetry and efficiency φ = 1/3 each.
    phi = shapley_exact(lambda t: float(len(t) >= 2), ["x", "y", "z"])
    assert phi == pytest.approx({"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}, abs=1e-12)


def test_efficiency_symmetry_dummy():
    def v(t):
        # a and b are interchangeable; d is a dummy.
        return 1.0 + 2.0 * (("a" in t) + ("b" in t)) ** 2 + 3.0 * ("c" in t) * ("a" in t)

    players = ["a", "b", "c", "d"]
    phi = shapley_exact(v, players)
    assert sum(phi.values()) == pytest.approx(v(frozenset(players)) - v(frozenset()), abs=1e-12)
    assert phi["d"] == pytest.approx(0.0, abs=1e-12)
    # a and b are *not* symmetric because of the c·a term; check the symmetric pair in a variant.
    phi2 = shapley_exact(lambda t: v(t - {"c"}), players)
    assert phi2["a"] == pytest.approx(phi2["b"], abs=1e-12)
    assert phi2["c"] == pytest.approx(0.0, abs=1e-12)


def test_each_coalition_evaluated_once():
    game = CountingGame(four_player)
    shapley_exact(game, ["a", "b", "c", "d"])
    assert len(game.calls) == 16
    assert set(game.calls.values()) == {1}
    assert frozenset() in game.calls and frozenset("abcd") in game.calls


def test_matches_brute_force_permutations():
    players = ["a", "b", "c", "d"]
    brute = dict.fromkeys(players, 0.0)
    perms = list(itertools.permutations(players))
    for order in perms:
        seen: set[str] = set()
        for p in order:
            before = four_player(frozenset(seen))
            seen.add(p)
            brute[p] += (four_player(frozenset(seen)) - before) / len(perms)
    assert shapley_exact(four_player, players) == pytest.approx(brute, abs=1e-12)


def test_shap_backend_equals_exact():
    players = ["a", "b", "c", "d"]
    exact = shapley_values(four_player, players, method="exact")
    via_shap = shapley_values(four_player, players, method="shap")
    assert list(via_shap) == players
    for p in players:
        assert abs(exact[p] - via_shap[p]) < 1e-9
    glove_shap = shapley_values(glove, ["L", "R1", "R2"], method="shap")
    assert glove_shap == pytest.approx({"L": 2 / 3, "R1": 1 / 6, "R2": 1 / 6}, abs=1e-9)


def test_monte_carlo_converges_to_exact():
    players = ["a", "b", "c", "d"]
    exact = shapley_exact(four_player, players)
    mc = shapley_monte_carlo(four_player, players, permutations=4000, rng=123)
    for p in players:
        assert abs(mc[p] - exact[p]) < 0.02
    # Efficient for every sample, not just in expectation.
    total = four_player(frozenset(players)) - four_player(frozenset())
    assert sum(mc.values()) == pytest.approx(total, abs=1e-12)
    few = shapley_monte_carlo(four_player, players, permutations=3, rng=1, antithetic=False)
    assert sum(few.values()) == pytest.approx(total, abs=1e-12)


def test_monte_carlo_reproducible_and_cached():
    players = ["a", "b", "c", "d"]
    assert shapley_monte_carlo(four_player, players, 50, rng=7) == shapley_monte_carlo(
        four_player, players, 50, rng=np.random.default_rng(7)
    )
    game = CountingGame(four_player)
    shapley_monte_carlo(game, players, permutations=500)
    assert set(game.calls.values()) == {1}  # each coalition at most once
    # An additive game is recovered exactly by any single permutation.
    w = {"a": 1.0, "b": -2.0, "c": 0.5}
    assert shapley_monte_carlo(additive(w), list(w), permutations=1) == pytest.approx(w, abs=1e-12)


def test_auto_switches_to_monte_carlo_beyond_eight_players():
    players = [f"m{i}" for i in range(10)]
    w = {p: float(i) for i, p in enumerate(players)}
    game = CountingGame(additive(w))
    phi = shapley_values(game, players, method="auto", permutations=4)
    assert phi == pytest.approx(w, abs=1e-9)
    assert len(game.calls) < 2**10  # not the exact enumeration
    game8 = CountingGame(additive(dict(list(w.items())[:8])))
    shapley_values(game8, players[:8])
    assert len(game8.calls) == 2**8


def test_too_many_players_for_exact():
    players = [f"m{i}" for i in range(17)]
    with pytest.raises(ConfigError, match="Monte-Carlo"):
        shapley_exact(lambda t: 0.0, players)
    with pytest.raises(ConfigError, match="monte_carlo"):
        shapley_values(lambda t: 0.0, players, method="shap")


def test_bad_inputs():
    with pytest.raises(ConfigError, match="distinct"):
        shapley_exact(lambda t: 0.0, ["a", "a"])
    with pytest.raises(ConfigError, match="single string"):
        shapley_exact(lambda t: 0.0, "ab")
    with pytest.raises(ConfigError, match="unknown Shapley method"):
        shapley_values(lambda t: 0.0, ["a"], method="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="permutations"):
        shapley_monte_carlo(lambda t: 0.0, ["a"], permutations=0)
    with pytest.raises(DataError, match="finite"):
        shapley_exact(lambda t: math.nan if t else 0.0, ["a", "b"])
    assert shapley_exact(lambda t: 1.0, []) == {}
    assert shapley_exact(lambda t: 3.0 * len(t), ["solo"]) == {"solo": 3.0}


def test_normalize_nonnegative():
    assert normalize_nonnegative({"a": 3.0, "b": 1.0, "c": -2.0}) == pytest.approx(
        {"a": 0.75, "b": 0.25, "c": 0.0}
    )
    assert normalize_nonnegative({"a": -1.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}
    assert normalize_nonnegative({"a": -1.0, "b": 0.0}, fallback="zeros") == {"a": 0.0, "b": 0.0}
    assert normalize_nonnegative({}) == {}
    with pytest.raises(DataError):
        normalize_nonnegative({"a": math.inf})


def test_minmax_normalize():
    out = minmax_normalize({"a": 2.0, "b": 4.0, "c": 3.0})
    assert out["a"] == 0.0
    assert out["c"] == pytest.approx(0.5, abs=1e-9)
    assert out["b"] == pytest.approx(1.0, abs=1e-9) and out["b"] < 1.0
    assert minmax_normalize({"a": 5.0, "b": 5.0}) == {"a": 0.0, "b": 0.0}
    assert minmax_normalize({}) == {}
