"""CLIP loss and retrieval recall against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmm.core.maths import clip_loss, retrieval_recall


def test_clip_loss_hand_computed_two_by_two() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: identity
    # S = I / τ; each row: -log(e^{1/τ} / (e^{1/τ} + 1)); both directions equal.
    tau = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert clip_loss(a, b, tau).item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_is_log_n_for_constant_similarity_and_symmetric() -> None:
    n = 7
    same = torch.ones(n, 3)
    assert clip_loss(same, same, 1.0).item() == pytest.approx(math.log(n), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    assert clip_loss(a, b).item() == pytest.approx(clip_loss(b, a).item(), rel=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        clip_loss(a, b[:3])


def test_retrieval_recall_hand_computed() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # b: row 0 matches a0; row 1 points like a0 (a1's partner is ranked below b0? a1·b1 = 0.1/..)
    b = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 1.0]])
    # a→b cos sims: a0: [1, .995, .707] -> partner b0 rank 0 ✓; a1: [0, .0995, .707] -> b1 rank 1 ✗@1
    # a2: [.707, .774, 1] -> b2 rank 0 ✓.  b→a: b0: [1, 0, .707] ✓; b1: [.995, .0995, .774] rank 2 ✗;
    # b2: [.707, .707, 1] ✓.
    assert retrieval_recall(a, b, 1) == pytest.approx((2 / 3, 2 / 3))
    assert retrieval_recall(a, b, 2) == pytest.approx((1.0, 2 / 3))
    assert retrieval_recall(a, b, 3) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError, match="k must be"):
        retrieval_recall(a, b, 0)
