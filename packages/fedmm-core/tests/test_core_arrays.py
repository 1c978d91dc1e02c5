from __future__ import annotations

import numpy as np
import pytest

from fedmm.core.arrays import nbytes, validate_update, weighted_mean
from fedmm.core.errors import UpdateError


def _g(a: float, b: float) -> dict[str, dict[str, np.ndarray]]:
    return {"enc": {"w": np.full(2, a, np.float32)}, "head": {"w": np.full(1, b, np.float32)}}


def test_weighted_mean_hand_computed() -> None:
    prev = _g(0, 0)
    out = weighted_mean([_g(1, 10), _g(4, 20)], [1.0, 3.0], prev)
    assert np.allclose(out["enc"]["w"], 0.25 * 1 + 0.75 * 4)
    assert np.allclose(out["head"]["w"], 0.25 * 10 + 0.75 * 20)


def test_groups_averaged_over_their_uploaders_only() -> None:
    prev = _g(9, 9)
    a = {"enc": {"w": np.full(2, 1, np.float32)}}  # uploads only the encoder
    b = {"enc": {"w": np.full(2, 3, np.float32)}, "head": {"w": np.full(1, 5, np.float32)}}
    out = weighted_mean([a, b], [1.0, 1.0], prev)
    assert np.allclose(out["enc"]["w"], 2.0)
    assert np.allclose(out["head"]["w"], 5.0)  # b alone, weight renormalised


def test_group_nobody_uploaded_is_bit_identical() -> None:
    prev = {
        "enc": {"w": np.random.default_rng(0).standard_normal(5).astype(np.float32)},
        "head": {"w": np.ones(1, np.float32)},
    }
    out = weighted_mean([{"head": {"w": np.zeros(1, np.float32)}}], [2.0], prev)
    assert out["enc"]["w"] is prev["enc"]["w"]


def test_validate_update_errors() -> None:
    ref = _g(0, 0)
    validate_update(_g(1, 1), ref)
    bad = _g(1, 1)
    bad["enc"]["w"][0] = np.nan
    with pytest.raises(UpdateError, match="NaN"):
        validate_update(bad, ref)
    with pytest.raises(UpdateError, match="shape"):
        validate_update({"enc": {"w": np.zeros(3, np.float32)}}, ref)
    with pytest.raises(UpdateError, match="unknown parameter group"):
        validate_update({"zzz": {"w": np.zeros(2, np.float32)}}, ref)
    with pytest.raises(UpdateError, match="differ"):
        validate_update({"enc": {"v": np.zeros(2, np.float32)}}, ref)


def test_nbytes() -> None:
    assert nbytes(_g(1, 2)) == 3 * 4


def test_weighted_mean_accumulates_in_float64() -> None:
    # With 1/3 and 2/3 weights, rounding each product to float32 first changes ~40 % of the
    # results (checked when this test was written); the float64 path must match exactly.
    rng = np.random.default_rng(0)
    a = {"g": {"w": rng.standard_normal(1000).astype(np.float32)}}
    b = {"g": {"w": rng.standard_normal(1000).astype(np.float32)}}
    out = weighted_mean([a, b], [1.0, 2.0], {"g": {"w": np.zeros(1000, np.float32)}})
    expected = (1 / 3) * a["g"]["w"].astype(np.float64) + (2 / 3) * b["g"]["w"].astype(np.float64)
    assert np.array_equal(out["g"]["w"], expected.astype(np.float32))
