"""BMSFed's ME loss and imbalance ratios (spec §3.1–3.2) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedmm.select.bmsfed.losses import (
    client_imbalance_ratio,
    modal_enhancement_loss,
    prototype_distances,
    prototype_scores,
    prototype_temperature,
)


def test_me_loss_matches_a_hand_computed_value() -> None:
    protos = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([0, 1])
    # sample 0: distances (0, 5), label 0 -> -log(1 / (1 + e^-5))
    # sample 1: distances (3, 4), label 1 -> -log(e^-4 / (e^-3 + e^-4))
    l0 = math.log(1 + math.exp(-5))
    l1 = -math.log(math.exp(-4) / (math.exp(-3) + math.exp(-4)))
    assert float(modal_enhancement_loss(z, y, protos)) == pytest.approx((l0 + l1) / 2, abs=1e-5)


def test_me_loss_is_cross_entropy_over_negative_distances() -> None:
    g = torch.Generator().manual_seed(0)
    z, protos = torch.randn(16, 8, generator=g), torch.randn(5, 8, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    expected = F.cross_entropy(-torch.cdist(z, protos), y)
    assert torch.allclose(modal_enhancement_loss(z, y, protos), expected, atol=1e-5)
    assert torch.allclose(
        modal_enhancement_loss(z, y, protos, temperature=2.5),
        F.cross_entropy(-torch.cdist(z, protos) / 2.5, y),
        atol=1e-5,
    )


def test_me_loss_gradient_is_finite_on_a_prototype() -> None:
    protos = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    z = torch.tensor([[1.0, 1.0]], requires_grad=True)
    modal_enhancement_loss(z, torch.tensor([0]), protos).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_scores_temperature_and_ratios() -> None:
    protos = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[0.0, 0.0]])
    s = prototype_scores(z, torch.tensor([0]), protos)
    assert float(s) == pytest.approx(1 / (1 + math.exp(-5)), abs=1e-6)
    assert prototype_temperature(protos) == pytest.approx(5.0)
    assert prototype_temperature(protos[:1]) == 1.0
    assert torch.allclose(prototype_distances(z, protos), torch.tensor([[0.0, 5.0]]), atol=1e-5)
    assert client_imbalance_ratio(0.9, 0.6) == pytest.approx(1.5)
    assert client_imbalance_ratio(0.5, 0.0) == pytest.approx(0.5 / 1e-8)
    assert math.isnan(client_imbalance_ratio(math.nan, 0.5))
