"""MCM and RAM against hand-computed values on tiny batches."""

from __future__ import annotations

import math

import pytest
import torch

from fedmm.completion.fedmvp.losses import mcm_loss, nt_xent, ram_loss


def test_nt_xent_hand_computed() -> None:
    # B = 2, unit vectors: a0 = b0 = e1, a1 = b1 = e2. Rows s = [e1, e2, e1, e2].
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised to the same
    tau = 0.5
    # Anchor e1 (row 0): others e2 (0), e1 (positive, 1), e2 (0) → -log(e^{2} / (e^{2} + 2)).
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2.0))
    assert nt_xent(a, b, tau).item() == pytest.approx(expected, rel=1e-6)  # every anchor is alike


def test_nt_xent_with_one_pair_is_zero_and_validates() -> None:
    assert nt_xent(torch.randn(1, 4), torch.randn(1, 4)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        nt_xent(torch.randn(2, 3), torch.randn(3, 3))


def test_mcm_sums_over_modalities_with_alpha() -> None:
    g = torch.Generator().manual_seed(0)
    z, u1, u2 = (torch.randn(4, 3, generator=g) for _ in range(3))
    got = mcm_loss(z, {"image": u1, "text": u2}, temperature=0.2, alpha=0.01)
    assert got.item() == pytest.approx(0.01 * (nt_xent(z, u1, 0.2) + nt_xent(z, u2, 0.2)).item(), rel=1e-6)
    assert mcm_loss(z, {}).item() == 0.0


def test_ram_gates_on_the_unimodal_loss() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    u_img = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # ‖Z − U‖_F = 1
    u_txt = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # ‖Z − U‖_F = 2
    joint_ce = torch.tensor(1.0)
    ce = {"image": torch.tensor(0.5), "text": torch.tensor(1.5)}  # only the image classifies better
    got = ram_loss(z, {"image": u_img, "text": u_txt}, ce, joint_ce, beta=0.5)
    assert got.item() == pytest.approx(0.5 * 1.0 / 2)
    none = ram_loss(z, {"image": u_img}, {"image": torch.tensor(2.0)}, joint_ce)
    assert none.item() == 0.0
