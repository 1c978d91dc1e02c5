"""Batched clients: a round's planned clients trained together as one vectorised computation.

The sequential engine trains one client after another, each step a small batch (32 samples) that
leaves most of the machine idle. Here every client's parameters and optimiser state are stacked
along a leading client axis, and each step is one ``torch.func.vmap`` of ``grad`` over all clients
at once (``functional_call`` on the one working model), followed by the plan's optimiser written
out on the stacked tensors. The per-client semantics are the sequential engine's, up to
floating-point reassociation:

* each client draws its own batch order from its own seeded generator, exactly the batches
  :func:`fedmm.core.client.client_round` would see, in the same order;
* a client whose batch at step ``t`` is smaller (its last batch) is padded with copies of its own
  samples that weigh 0 in its loss, which stays the mean over its real labelled samples;
* only the clients with a step ``t`` take part in step ``t`` (their parameters and optimiser
  state gathered, then scattered back), so a client whose data ran out costs nothing; a client
  whose batch has no labelled sample is masked: its parameters and optimiser state do not move
  (as a step that gives no loss does not step sequentially);
* a parameter that gets no gradient sequentially (the encoder of a modality the client's batch
  lacks: it is not run, so its gradient is None and the optimiser skips it) is not updated and
  its optimiser state does not advance. Which parameters get a gradient is read from the real
  sequential step measured once per step signature (as the ledger measures FLOPs);
* gradient clipping and SGD (momentum, weight decay) / Adam / AdamW follow torch's formulas.

Each client's ``prepare`` hooks run before (one after another, on the working model holding its
downloaded weights) and its ``report`` / ``upload`` hooks after, on its trained weights: only the
steps are batched. The ledger stays per client and measured: FLOPs and peak memory per step
signature from one real measured step (the sequential meter's figures), and the batched training
time apportioned to the clients by their steps.

When a round's plans do not allow it (see :func:`batching_obstacle`), the engine runs its clients
one by one and says why in the log, once per reason.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fedmm.core.arrays import GroupedArrays
from fedmm.core.client import (
    ClientSetup,
    StepMeter,
    begin_round,
    finish_round,
    make_optimizer,
    overriding_hooks,
    plan_steps,
    train_step,
)
from fedmm.core.data.types import MISSING_LABEL, Batch, ClientData, ModalitySpec
from fedmm.core.failures import ClientDrop
from fedmm.core.measure import measure_step
from fedmm.core.protocol import ClientResult, Combination, Technique, TrainPlan

log = logging.getLogger("fedmm")

# Plan fields every client of a batched round must share (they shape the one vectorised step).
SHARED_FIELDS = (
    "train",
    "depth",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "max_grad_norm",
    "lr_by_group",
    "loss_weights",
)


def batching_obstacle(
    model: nn.Module, plans: Mapping[int, TrainPlan], techniques: Sequence[Technique]
) -> str | None:
    """Why the round's clients cannot be trained as one batch (None: they can)."""
    loss_hooks = [t for t in techniques if any(t.adds_loss_terms(p) for p in plans.values())]
    if loss_hooks:
        names = ", ".join(sorted({type(t).__name__ for t in loss_hooks}))
        return f"a technique adds loss terms inside each step ({names})"
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return "the model draws dropout masks (each client's would differ from its sequential run)"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return "the model keeps batch-norm statistics (padded samples would enter them)"
        if isinstance(m, nn.RNNBase):
            return "the model has a recurrent layer (torch.func has no batched rule for it)"
    first = next(iter(plans.values()))
    for plan in plans.values():
        if plan.combinations:
            return "a plan schedules modality combinations"
        for name in SHARED_FIELDS:
            if getattr(plan, name) != getattr(first, name):
                return f"the plans differ in {name!r}"
    ce = first.loss_weights.get("ce", 1.0)
    if set(first.loss_weights) - {"ce"} or not math.isfinite(ce):
        return "a plan weighs loss terms other than the cross-entropy"
    return None


@dataclass
class _Client:
    """One client of a batched round: its setup, its batches, and what its steps did."""

    setup: ClientSetup
    batches: list[Batch]
    losses: list[float] = field(default_factory=list)
    trained_modalities: set[str] = field(default_factory=set)
    has_state: bool = False  # whether its optimiser holds state yet (a step with a loss happened)
    begin_seconds: float = 0.0


@dataclass(frozen=True)
class _Signature:
    flops: int
    peak_bytes: int
    with_grad: frozenset[str]  # the parameters a real step of this signature gives a gradient


class BatchedTrainer:
    """Trains the clients of one round together (see the module docstring) on ``model``."""

    def __init__(self, model: nn.Module, meter: StepMeter) -> None:
        self.model = model
        self.meter = meter
        # Which parameters a signature's real step gives a gradient: cached beside the meter's figures.
        self.with_grad: dict[tuple[Any, ...], frozenset[str]] = {}
        self._scratch: nn.Module | None = None
        self._named: list[tuple[str, torch.Tensor]] | None = None

    # -- the round --------------------------------------------------------------------------
    def train(
        self,
        global_arrays: GroupedArrays,
        plans: Mapping[int, TrainPlan],
        data: Mapping[int, ClientData],
        states: Mapping[int, Mapping[str, np.ndarray]],
        seeds: Mapping[int, int],
        techniques: Sequence[Technique],
        *,
        round_: int,
        modalities: tuple[ModalitySpec, ...],
        num_classes: int,
    ) -> tuple[list[ClientResult], list[ClientDrop]]:
        """The clients' results in plan order, and the clients whose own hooks raised (dropped,
        as sequentially). An error in the vectorised steps themselves propagates: the caller runs
        the round one client at a time instead."""
        model = self.model
        clients: list[_Client] = []
        starts: list[dict[str, torch.Tensor]] = []
        drops: list[ClientDrop] = []
        for cid, plan in plans.items():
            try:
                setup = begin_round(
                    model,
                    global_arrays,
                    plan,
                    data[cid],
                    states.get(cid, {}),
                    techniques,
                    round_=round_,
                    seed=seeds[cid],
                    modalities=modalities,
                    num_classes=num_classes,
                )
            except Exception as exc:  # a failing client must not stop the round
                drops.append(ClientDrop.from_exception(cid, exc))
                continue
            # The client's whole starting state: kept groups may differ between clients.
            starts.append({k: t.detach().clone() for k, t in self._tensors()})
            gen = setup.cctx.generator
            batches = (
                list(plan_steps(setup.data, Combination(), plan, gen, setup.device)) if setup.params else []
            )
            clients.append(_Client(setup, batches, begin_seconds=time.perf_counter() - setup.start))
        plan = next(iter(plans.values()))
        loss_hooks = overriding_hooks(techniques, "loss_terms")
        t_train = time.perf_counter()
        finals = self._train(clients, starts, plan) if any(c.batches for c in clients) else starts
        train_seconds = time.perf_counter() - t_train
        total_steps = sum(len(c.batches) for c in clients)
        results: list[ClientResult] = []
        for client, final in zip(clients, finals, strict=True):
            cid = client.setup.data.client_id
            with torch.no_grad():  # the client's trained weights into the working model
                for k, t in self._tensors():
                    t.copy_(final[k])
            cost = client.setup.cost
            share = len(client.batches) / total_steps if total_steps else 0.0
            # Measured together: each client is charged the batched time in proportion to its steps.
            cost.seconds_by_hook["train"] = train_seconds * share
            cost.flops_by_hook["train"] = cost.flops
            if loss_hooks:  # overridden, and off for these plans: they ran nothing
                cost.flops_by_hook["loss_terms"] = 0
                cost.seconds_by_hook["loss_terms"] = 0.0
            # Its own seconds: its download and prepare, its share of the steps, its report.
            client.setup.start = time.perf_counter() - client.begin_seconds - train_seconds * share
            try:
                results.append(
                    finish_round(
                        model,
                        client.setup,
                        techniques,
                        client.losses,
                        len(client.batches),
                        client.trained_modalities,
                    )
                )
            except Exception as exc:
                drops.append(ClientDrop.from_exception(cid, exc))
        return results, drops

    def _tensors(self) -> list[tuple[str, torch.Tensor]]:
        """The working model's parameters and buffers by state-dict name, listed once (a
        ``state_dict()`` per client costs more than the client's step on a small model)."""
        if self._named is None:
            keys = set(self.model.state_dict())
            named = [*self.model.named_parameters(), *self.model.named_buffers()]
            self._named = [(k, t) for k, t in named if k in keys]
        return self._named

    # -- the vectorised steps ---------------------------------------------------------------
    def _train(
        self, clients: list[_Client], starts: list[dict[str, torch.Tensor]], plan: TrainPlan
    ) -> list[dict[str, torch.Tensor]]:
        model = self.model
        setup0 = clients[0].setup
        lr_of = {key: lr for key, _, lr in setup0.params}
        trainable = list(lr_of)
        names = [k for k, _ in model.named_parameters()]
        frozen = [k for k in names if k not in lr_of]
        buffers = [k for k, _ in model.named_buffers()]
        n = len(clients)
        stack = {k: torch.stack([s[k] for s in starts]) for k in starts[0]}
        params = {k: stack[k] for k in trainable}
        fixed = {k: stack[k] for k in frozen + buffers}
        opt = _StackedOptimizer(plan, lr_of, params)
        ce_weight = float(plan.loss_weights.get("ce", 1.0))
        modality_names = next(c.batches[0].modalities for c in clients if c.batches)

        def loss_fn(
            p: dict[str, torch.Tensor],
            f: dict[str, torch.Tensor],
            feats: dict[str, torch.Tensor],
            present: torch.Tensor,
            labels: torch.Tensor,
            weight: torch.Tensor,
            any_present: tuple[bool, ...],
        ) -> tuple[torch.Tensor, torch.Tensor]:
            batch = Batch(feats, present, labels, modality_names, any_present)
            out = functional_call(model, {**p, **f}, (batch,))
            per_sample = F.cross_entropy(out.logits, labels.clamp_min(0), reduction="none")
            loss = ce_weight * (per_sample * weight).sum() / weight.sum().clamp_min(1.0)
            return loss, loss.detach()

        model.train()
        steps = max(len(c.batches) for c in clients)
        stores_state = plan.optimizer != "sgd" or plan.momentum != 0
        for t in range(steps):
            # Only the clients with a step t take part: a client whose data ran out (a heavy-tailed
            # partition has many) costs the others nothing.
            members = [i for i, c in enumerate(clients) if t < len(c.batches)]
            parts = [clients[i].batches[t] for i in members]
            width = max(len(b) for b in parts)
            feats: dict[str, list[torch.Tensor]] = {m: [] for m in modality_names}
            present_l, labels_l, weight_l = [], [], []
            stepping: list[bool] = []
            grad_masks: list[frozenset[str]] = []
            any_all = [False] * len(modality_names)
            for i, b in zip(members, parts, strict=True):
                client = clients[i]
                labelled = b.labels != MISSING_LABEL
                n_lab = int(labelled.sum())
                if len(b) < width:  # padded with the client's own samples, at weight 0
                    pad = torch.arange(width, device=b.labels.device) % len(b)
                    for m in modality_names:
                        feats[m].append(b.features[m].index_select(0, pad))
                    present_l.append(b.present.index_select(0, pad))
                    labels_l.append(b.labels.index_select(0, pad))
                else:
                    for m in modality_names:
                        feats[m].append(b.features[m])
                    present_l.append(b.present)
                    labels_l.append(b.labels)
                w = labelled.to(torch.float32)
                weight_l.append(torch.cat([w, w.new_zeros(width - len(b))]) if len(b) < width else w)
                anys = tuple(bool(x) for x in b.present.any(0).tolist())
                sig = client.setup.step_signature(b, n_lab, None, anys, client.has_state)
                signature = self._signature(sig, client, b, starts[i], plan)
                with_grad = signature.with_grad
                self._charge(client, signature)
                stepping.append(n_lab > 0)
                grad_masks.append(with_grad if n_lab else frozenset())
                if n_lab:
                    # As torch's optimisers: SGD without momentum keeps no state.
                    client.has_state = stores_state
                    client.trained_modalities.update(
                        m for m, a in zip(modality_names, anys, strict=True) if a
                    )
                    any_all = [a or x for a, x in zip(any_all, anys, strict=True)]
            if not any(stepping):
                continue
            every = len(members) == n
            index = None if every else torch.tensor(members, device=labels_l[0].device)
            sub_p = params if index is None else {k: v.index_select(0, index) for k, v in params.items()}
            sub_f = fixed if index is None else {k: v.index_select(0, index) for k, v in fixed.items()}
            with warnings.catch_warnings():
                # An operator without a batching rule (CPU flash attention) runs client by client
                # inside vmap: still correct, and said once in the docs rather than every step.
                warnings.filterwarnings("ignore", message="There is a performance drop")
                grads, losses = vmap(grad(loss_fn, has_aux=True), in_dims=(0, 0, 0, 0, 0, 0, None))(
                    sub_p,
                    sub_f,
                    {m: torch.stack(v) for m, v in feats.items()},
                    torch.stack(present_l),
                    torch.stack(labels_l),
                    torch.stack(weight_l),
                    tuple(any_all),
                )
            values = losses.tolist()
            for i, steps_now, value in zip(members, stepping, values, strict=True):
                if steps_now:
                    clients[i].losses.append(float(value))
            has_grad = {
                k: torch.tensor([k in g for g in grad_masks], dtype=torch.bool, device=params[k].device)
                for k in trainable
            }
            new = opt.step(sub_p, grads, has_grad, plan.max_grad_norm, index)
            params = new if index is None else {k: params[k].index_copy(0, index, new[k]) for k in params}
        model.eval()
        # One unbind per tensor, not one index per client and tensor (a round of 100 clients).
        rows = {k: params[k].unbind(0) for k in trainable}
        finals: list[dict[str, torch.Tensor]] = []
        for i in range(n):
            final = dict(starts[i])
            final.update({k: rows[k][i] for k in trainable})
            finals.append(final)
        return finals

    # -- the ledger's figures, from one real step per signature -------------------------------
    def _signature(
        self,
        sig: tuple[Any, ...],
        client: _Client,
        batch: Batch,
        start: dict[str, torch.Tensor],
        plan: TrainPlan,
    ) -> _Signature:
        """The ledger's figures for a step of signature ``sig`` (the sequential meter's, measured
        on a real step of a scratch copy when new) and which parameters such a step gives a
        gradient (a function of the encoders that run and the trainable groups alone)."""
        measured = self.meter.cache.get(sig)
        grad_key = (sig[3], sig[4])  # modalities present, trainable groups and depth
        with_grad = self.with_grad.get(grad_key)
        if measured is None or with_grad is None:
            scratch = self._scratch_model()
            scratch.load_state_dict(start)
            lr_of = {key: lr for key, _, lr in client.setup.params}
            pairs = []
            for key, p in scratch.named_parameters():
                p.requires_grad_(key in lr_of)
                if key in lr_of:
                    pairs.append((p, lr_of[key]))
            optimizer = make_optimizer(pairs, plan)
            labelled = batch.labels != MISSING_LABEL
            n_lab = int(labelled.sum())
            scratch.train()

            def step() -> None:  # the client's step, as client_round takes it
                train_step(
                    scratch,
                    batch,
                    None,
                    labelled,
                    n_lab,
                    (),
                    None,
                    plan.loss_weights,
                    optimizer,
                    max_grad_norm=plan.max_grad_norm,
                )

            if sig[-1]:  # a steady-state step: the optimiser holds its state throughout
                self._fill_state(scratch, optimizer, with_grad, step)
            with measure_step() as m:
                step()
            if measured is None:
                measured = (int(m.flops), int(m.peak_bytes), 0)
                self.meter.cache[sig] = measured
            if n_lab:  # a step without a loss runs no backward: it says nothing about gradients
                with_grad = frozenset(k for k, p in scratch.named_parameters() if p.grad is not None)
                self.with_grad[grad_key] = with_grad
        return _Signature(measured[0], measured[1], with_grad or frozenset())

    @staticmethod
    def _fill_state(
        scratch: nn.Module,
        optimizer: torch.optim.Optimizer,
        with_grad: frozenset[str] | None,
        step: Callable[[], None],
    ) -> None:
        """Give ``optimizer`` the state a client's optimiser holds after its first steps. With the
        parameters that get a gradient known, one optimiser step on zero gradients does it (no
        forward or backward); else one real ``step`` on the batch."""
        if with_grad is None:
            step()
            return
        for key, p in scratch.named_parameters():
            if key in with_grad and p.requires_grad:
                p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def _charge(client: _Client, signature: _Signature) -> None:
        cost = client.setup.cost
        cost.flops += signature.flops
        cost.flops_by_combination["all"] = cost.flops_by_combination.get("all", 0) + signature.flops
        cost.peak_bytes = max(cost.peak_bytes, signature.peak_bytes)

    def _scratch_model(self) -> nn.Module:
        if self._scratch is None:
            self._scratch = copy.deepcopy(self.model)
        return self._scratch


class _StackedOptimizer:
    """The plan's optimiser on parameters stacked along a leading client axis, with torch's
    formulas (SGD with momentum and weight decay; Adam; AdamW), per client and per parameter:
    a parameter without a gradient for a client neither moves nor advances its state."""

    def __init__(
        self, plan: TrainPlan, lr_of: Mapping[str, float], params: Mapping[str, torch.Tensor]
    ) -> None:
        self.kind = plan.optimizer
        self.lr = dict(lr_of)
        self.momentum = plan.momentum
        self.weight_decay = plan.weight_decay
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        for k, p in params.items():
            n = p.shape[0]
            if self.kind == "sgd":
                self.state[k] = {
                    "buf": torch.zeros_like(p),
                    "has": torch.zeros(n, dtype=torch.bool, device=p.device),
                }
            else:
                self.state[k] = {
                    "m": torch.zeros_like(p),
                    "v": torch.zeros_like(p),
                    "step": torch.zeros(n, dtype=p.dtype, device=p.device),
                }

    def step(
        self,
        params: dict[str, torch.Tensor],
        grads: Mapping[str, torch.Tensor],
        has_grad: Mapping[str, torch.Tensor],
        max_grad_norm: float | None,
        index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The stepped ``params`` of the clients ``index`` (all when None: ``params``, ``grads``
        and ``has_grad`` then hold those clients only), their optimiser state updated in place."""
        if index is None:
            return self._step(params, grads, has_grad, max_grad_norm, self.state)
        sub = {k: {name: v.index_select(0, index) for name, v in st.items()} for k, st in self.state.items()}
        out = self._step(params, grads, has_grad, max_grad_norm, sub)
        for k, st in self.state.items():
            for name in st:
                st[name] = st[name].index_copy(0, index, sub[k][name])
        return out

    def _step(
        self,
        params: Mapping[str, torch.Tensor],
        grads: Mapping[str, torch.Tensor],
        has_grad: Mapping[str, torch.Tensor],
        max_grad_norm: float | None,
        states: dict[str, dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        grads = dict(grads)
        if max_grad_norm is not None:
            # torch.nn.utils.clip_grad_norm_: the norm over the parameters that have a gradient.
            sq = sum((grads[k].flatten(1).pow(2).sum(1) * has_grad[k]) for k in grads)
            total = torch.as_tensor(sq).sqrt()
            coef = (max_grad_norm / (total + 1e-6)).clamp(max=1.0)
            grads = {k: g * _expand(coef, g) for k, g in grads.items()}
        out: dict[str, torch.Tensor] = {}
        for k, p in params.items():
            g = grads[k]
            mask = has_grad[k]
            lr = self.lr[k]
            st = states[k]
            if self.weight_decay and self.kind != "adamw":
                g = g + self.weight_decay * p
            if self.kind == "sgd":
                if self.momentum:
                    first = _expand(~st["has"], g)
                    buf = torch.where(first, g, st["buf"] * self.momentum + g)
                    st["buf"] = torch.where(_expand(mask, g), buf, st["buf"])
                    st["has"] = st["has"] | mask
                    g = buf
                new = p - lr * g
            else:
                beta1, beta2, eps = 0.9, 0.999, 1e-8
                step = st["step"] + mask.to(p.dtype)
                m = st["m"] + (g - st["m"]) * (1 - beta1)
                v = st["v"] * beta2 + (1 - beta2) * g * g
                bc1 = 1 - beta1 ** step.clamp_min(1)
                bc2 = 1 - beta2 ** step.clamp_min(1)
                denom = v.sqrt() / _expand(bc2.sqrt(), v) + eps
                base = p * (1 - lr * self.weight_decay) if self.kind == "adamw" and self.weight_decay else p
                new = base - _expand(lr / bc1, p) * m / denom
                keep = _expand(mask, p)
                st["m"] = torch.where(keep, m, st["m"])
                st["v"] = torch.where(keep, v, st["v"])
                st["step"] = step
            out[k] = torch.where(_expand(mask, p), new, p)
        return out


def _expand(per_client: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-client ``(C,)`` tensor shaped to broadcast against ``like`` ``(C, ...)``."""
    return per_client.view(-1, *([1] * (like.dim() - 1)))


__all__ = ["BatchedTrainer", "batching_obstacle"]
