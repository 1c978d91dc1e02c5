"""Measured FLOPs and peak tensor memory of real training steps."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack

from fedmm.core.measure import StepMeasurement, current_rss_bytes, measure_step, peak_rss_bytes

F32 = 4


def _mlp(width: int, depth: int, d_in: int = 32, d_out: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def _measure(
    model: nn.Module, batch: int, opt_cls: type = torch.optim.SGD, d_in: int = 32
) -> StepMeasurement:
    torch.manual_seed(0)
    opt = opt_cls(model.parameters(), lr=0.01)
    x = torch.randn(batch, d_in)
    y = torch.randint(0, 10, (batch,))
    with measure_step() as m:
        _step(model, opt, x, y)
    return m


# --- the mechanism -------------------------------------------------------------------------------


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_backward_and_optimizer_ops_pass_through_a_dispatch_mode():
    # The assumption measure_step rests on: autograd's backward ops reach a mode entered around the step.
    lin = nn.Linear(4, 3)
    opt = torch.optim.Adam(lin.parameters())
    with _Recorder() as rec:
        lin(torch.randn(5, 4)).relu().sum().backward()
        opt.step()
    assert "aten.threshold_backward" in rec.ops  # ReLU's backward
    assert rec.ops.count("aten.mm") >= 1  # weight gradient
    assert any("addcdiv" in op or "sqrt" in op for op in rec.ops)  # Adam's update


def test_backward_alone_is_measured():
    b, d_in, d_out = 8, 16, 12
    lin = nn.Linear(d_in, d_out)
    loss = lin(torch.randn(b, d_in)).relu().sum()  # forward outside the measured block
    with measure_step() as m:
        loss.backward()
    assert m.flops == 2 * b * d_in * d_out  # only the weight-gradient mm
    grad_bytes = (d_in * d_out + d_out) * F32
    assert m.peak_bytes >= grad_bytes
    assert m.live_bytes_at_exit >= grad_bytes  # the .grad tensors created by backward are alive


def test_storage_python_object_outlives_its_python_references():
    # Tracking keys on the storage object: it must stay the same (and its weakref silent) while the
    # tensor lives, and die with the tensor.
    t = torch.randn(100)
    s = t.untyped_storage()
    fired: list[int] = []
    ref = weakref.ref(s, lambda r: fired.append(1))
    sid = id(s)
    del s
    gc.collect()
    assert not fired and id(t.untyped_storage()) == sid and t.untyped_storage() is ref()
    del t
    gc.collect()
    assert fired == [1]


# --- exact accounting on hand-computed sequences -------------------------------------------------


def test_peak_hand_computed():
    a = torch.ones(1000)  # 4000 B, existed before
    with measure_step() as m:
        b = a * 2  # a + b            = 8000
        c = b + 1  # a + b + c        = 12000
        del b  # a + c            = 8000
        d = c * 3  # a + c + d        = 12000
    assert m.peak_bytes == 12000
    assert m.preexisting_bytes == 4000
    assert m.live_bytes_at_exit == 12000
    assert m.peak_bytes_by_device == {"cpu": 12000}
    assert m.flops == 0 and m.complete
    del c, d


def test_freed_temporaries_are_subtracted():
    a = torch.ones(1000)
    with measure_step() as m:
        t = a * 2
        for _ in range(10):
            t = a * 2  # the new result exists before the old one is released: a + 2 results
    assert m.peak_bytes == 3 * 4000
    assert m.live_bytes_at_exit == 2 * 4000
    del t


def test_late_discovered_preexisting_storage_counts_from_the_start():
    a = torch.ones(1000)
    big = torch.ones(10000)  # alive during the whole step, first used at its end
    with measure_step() as m:
        b = a * 2
        c = b + 1  # a + b + c = 12000 (+ big, already alive → 52000)
        del b, c
        s = big.sum()
    assert m.peak_bytes == 12000 + 40000
    assert m.preexisting_bytes == 44000
    del s


def test_exception_marks_incomplete_and_exits_modes():
    a = torch.ones(10)
    with pytest.raises(RuntimeError, match="boom"), measure_step() as m:
        _ = a * 2
        raise RuntimeError("boom")
    assert not m.complete and m.num_ops == 1 and m.peak_bytes == 80
    assert _get_current_dispatch_mode_stack() == []  # nothing left on the mode stack


# --- training steps --------------------------------------------------------------------------------


def test_linear_flops_hand_formula():
    b, d_in, d_out = 8, 5, 3
    for input_grad, factor in ((False, 4), (True, 6)):
        lin = nn.Linear(d_in, d_out)
        x = torch.randn(b, d_in, requires_grad=input_grad)
        opt = torch.optim.Adam(lin.parameters())
        with measure_step() as m:
            lin(x).sum().backward()
            opt.step()
        # forward 2·B·in·out; backward 2·B·in·out for the weight grad (+ the same for the input grad)
        assert m.flops == factor * b * d_in * d_out
        assert m.flops_by_operator["aten.addmm"] == 2 * b * d_in * d_out


def test_bigger_model_has_bigger_peak():
    small = _measure(_mlp(32, 2), 16)
    big = _measure(_mlp(128, 4), 16)
    assert big.peak_bytes > small.peak_bytes
    assert big.flops > small.flops


def test_bigger_batch_has_bigger_peak():
    torch.manual_seed(0)
    model = _mlp(256, 3)
    m1 = _measure(copy.deepcopy(model), 16)
    m4 = _measure(copy.deepcopy(model), 64)
    # activations: 3 hidden layers × (pre- and post-ReLU) × 48 extra rows × 256 floats, at least
    assert m4.peak_bytes - m1.peak_bytes >= 3 * 48 * 256 * F32
    assert m4.flops == 4 * m1.flops


def test_peak_covers_params_grads_and_adam_state():
    torch.manual_seed(0)
    model = _mlp(64, 3)
    p = _param_bytes(model)
    sgd = _measure(copy.deepcopy(model), 8, torch.optim.SGD)
    adam = _measure(copy.deepcopy(model), 8, torch.optim.Adam)
    assert sgd.peak_bytes >= 2 * p  # parameters + gradients
    assert adam.peak_bytes >= 4 * p  # + exp_avg + exp_avg_sq
    assert adam.peak_bytes - sgd.peak_bytes >= 2 * p
    # After the step (grads freed by zero_grad) parameters and Adam's state remain.
    assert adam.live_bytes_at_exit >= 3 * p


def test_frozen_first_half_lowers_peak_and_flops():
    width, depth, batch, d_in = 128, 6, 32, 128
    torch.manual_seed(0)
    full = _mlp(width, depth, d_in=d_in, d_out=width)
    frozen = copy.deepcopy(full)
    head_len = depth  # first half: `depth // 2` (Linear, ReLU) pairs = `depth` modules
    head, tail = frozen[:head_len], frozen[head_len:]
    for prm in head.parameters():
        prm.requires_grad_(False)
    x = torch.randn(batch, d_in)

    opt_full = torch.optim.SGD(full.parameters(), lr=0.1)
    with measure_step() as m_full:
        full(x).square().mean().backward()
        opt_full.step()
        opt_full.zero_grad()

    opt_frozen = torch.optim.SGD([q for q in frozen.parameters() if q.requires_grad], lr=0.1)
    with measure_step() as m_frozen:
        with torch.no_grad():
            h = head(x)
        tail(h).square().mean().backward()
        opt_frozen.step()
        opt_frozen.zero_grad()

    assert m_frozen.peak_bytes < m_full.peak_bytes
    assert m_frozen.flops < m_full.flops
    # Hand formula: L = depth + 1 square Linear layers (d_in = width here), h of them frozen.
    n_layers, n_frozen, unit = depth + 1, depth // 2, 2 * batch * width * width
    assert m_full.flops == unit * (n_layers + n_layers + (n_layers - 1))
    trainable = n_layers - n_frozen
    assert m_frozen.flops == unit * (n_layers + trainable + (trainable - 1))


def test_measurement_leaves_results_bit_identical():
    torch.manual_seed(1)
    model_a = _mlp(64, 3)
    model_b = copy.deepcopy(model_a)
    opt_a = torch.optim.Adam(model_a.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(model_b.parameters(), lr=1e-2)
    x = torch.randn(16, 32)
    y = torch.randint(0, 10, (16,))
    for i in range(3):
        loss_a = _step(model_a, opt_a, x, y)
        if i == 0:
            with measure_step():
                loss_b = _step(model_b, opt_b, x, y)
        else:
            loss_b = _step(model_b, opt_b, x, y)
        assert torch.equal(loss_a, loss_b)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_switches():
    a = torch.ones(10)
    lin = nn.Linear(10, 10)
    with measure_step(count_flops=False) as m:
        lin(a)
    assert m.flops == 0 and m.peak_bytes > 0
    with measure_step(track_memory=False) as m:
        lin(a.unsqueeze(0))
    assert m.flops == 200 and m.peak_bytes == 0 and m.num_ops == 0


def test_rss():
    peak = peak_rss_bytes()
    cur = current_rss_bytes()
    assert peak > 1 << 20 and cur > 1 << 20
    assert cur <= peak * 1.1


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_flops_equal_flop_counter_mode_on_the_model_zoo(fusion: str) -> None:
    """Our single dispatch mode counts exactly what torch's FlopCounterMode counts."""
    from torch.utils.flop_counter import FlopCounterMode as _Reference

    from fedmm.core.data.types import Batch, ModalitySpec
    from fedmm.core.models import late_fusion

    specs = (
        ModalitySpec("img", (1, 8, 8), "image"),
        ModalitySpec("seq", (16, 3), "sequence"),
        ModalitySpec("vec", (10,), "vector"),
        ModalitySpec("tok", (6,), "tokens"),
        ModalitySpec("rnn", (12, 2), "sequence"),
    )
    torch.manual_seed(0)
    model = late_fusion(
        specs,
        5,
        fusion=fusion,
        encoders={"rnn": "lstm"},
        encoder_options={"tok": {"vocab_size": 30, "layers": 2}},
    )
    feats = {
        "img": torch.randn(4, 1, 8, 8),
        "seq": torch.randn(4, 16, 3),
        "vec": torch.randn(4, 10),
        "tok": torch.randint(0, 30, (4, 6)),
        "rnn": torch.randn(4, 12, 2),
    }
    batch = Batch(feats, torch.ones(4, 5, dtype=torch.bool), torch.tensor([0, 1, 2, 3]), tuple(feats))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with measure_step() as ours:
        step()
    reference = _Reference(display=False)
    with reference:
        step()
    assert ours.flops > 0
    assert ours.flops == reference.get_total_flops()
