"""One client's round as a pure function of its inputs.

``client_round(model, global_arrays, plan, data, state, techniques, seed)`` → :class:`ClientResult`.
The randomness comes only from ``seed`` (derived from run seed, round and client id), never from
execution order, so the in-process engine, a worker pool and Flower's ClientApp give the same
numbers, and a resumed run is bit-identical.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmm.core.arrays import GroupedArrays, get_arrays, model_groups, nbytes, set_arrays
from fedmm.core.data.types import MISSING_LABEL, Batch, ClientData, ModalitySpec
from fedmm.core.devices import module_device
from fedmm.core.errors import ConfigError, FedmmError
from fedmm.core.groups import expand_groups, modality_of
from fedmm.core.ledger import ClientCost
from fedmm.core.measure import StepMeasurement, measure_step
from fedmm.core.models.model import absent_groups, set_depth
from fedmm.core.protocol import ClientContext, ClientResult, Combination, Technique, TrainPlan

KEEP_PREFIX = "kept/"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends only on ``parts`` (e.g. run seed, round, client id)."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1
    )


class StepMeter:
    """Measures FLOPs and peak memory of a training step once per distinct step signature.

    The count is a function of shapes only, so one real measurement per signature (batch size,
    labelled count, active encoders, trainable groups, and whether the optimiser holds state yet)
    is exact for every step that shares it, and the ledger costs almost nothing on the hot path.
    Each entry is (step FLOPs, peak bytes, forward FLOPs of the ``loss_terms`` hooks within the
    step).

    The optimiser's state is part of the signature because it changes the peak: a fresh
    optimiser allocates its state (Adam's moments, SGD's momentum) during its first step, after
    backward has freed the activations, while in every later step that state is alive
    throughout. So a shape is measured at most twice, once on a fresh optimiser's first step and
    once in the steady state, and the ledger charges each step the peak of its own kind (a
    client's round, which steps more than once, is charged the steady state's). The figures
    depend on the step alone, not on which steps were measured before (a resumed run, a worker
    or a Flower ClientApp charges the same).
    """

    def __init__(self) -> None:
        self.cache: dict[tuple[Any, ...], tuple[int, int, int]] = {}

    def __len__(self) -> int:
        return len(self.cache)


def group_lrs(plan: TrainPlan, groups: Sequence[str]) -> dict[str, float]:
    """The learning rate of each of ``groups`` (the client's groups at the plan's depth) under
    ``plan``: the rate of the last ``lr_by_group`` pattern that names it, else ``plan.lr``.

    Raises :class:`~fedmm.core.errors.ConfigError` naming a pattern that matches no group."""
    lrs = dict.fromkeys(groups, plan.lr)
    for pattern, lr in plan.lr_by_group.items():
        try:
            named = expand_groups([pattern], groups)
        except ConfigError as exc:
            raise ConfigError(f"lr_by_group[{pattern!r}]: {exc}") from None
        for g in named:
            lrs[g] = lr
    return lrs


def make_optimizer(params: list[tuple[nn.Parameter, float]], plan: TrainPlan) -> torch.optim.Optimizer:
    """The plan's optimiser over ``params`` (each with its learning rate): one parameter group per
    distinct rate, in order of first appearance."""
    by_lr: dict[float, list[nn.Parameter]] = {}
    for p, lr in params:
        by_lr.setdefault(lr, []).append(p)
    groups: list[dict[str, Any]] = [{"params": ps, "lr": lr} for lr, ps in by_lr.items()]
    if plan.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay)
    if plan.optimizer == "adam":
        return torch.optim.Adam(groups, lr=plan.lr, weight_decay=plan.weight_decay)
    return torch.optim.AdamW(groups, lr=plan.lr, weight_decay=plan.weight_decay)


def plan_steps(
    data: ClientData, combo: Combination, plan: TrainPlan, gen: torch.Generator, device: torch.device
) -> Iterator[Batch]:
    """The batches of one combination's steps, on ``device``. The order is drawn on the host
    from the client's generator, so it is the same on every device."""
    if combo.steps is None:
        for _ in range(plan.local_epochs):
            for batch in data.batches(plan.batch_size, gen):
                yield batch.to(device, non_blocking=True)
        return
    done = 0
    while done < combo.steps:
        for batch in data.batches(plan.batch_size, gen):
            yield batch.to(device, non_blocking=True)
            done += 1
            if done >= combo.steps:
                return


@dataclass
class ClientSetup:
    """A client's round after its download and ``prepare`` hooks, before any step: what the
    training loop (one client's, or the batched engine's for many) and :func:`finish_round` need.
    The working model holds the client's starting weights, with ``params`` trainable."""

    start: float
    plan: TrainPlan
    data: ClientData
    cost: ClientCost
    cctx: ClientContext
    new_state: dict[str, np.ndarray]
    names: list[str]
    trainable: tuple[str, ...]
    params: list[tuple[str, nn.Parameter, float]]  # (key, parameter, learning rate)
    device: torch.device

    def step_signature(
        self,
        batch: Batch,
        n_lab: int,
        active: tuple[str, ...] | None,
        present: tuple[bool, ...],
        steady: bool,
    ) -> tuple[Any, ...]:
        """The key of a step's measured cost in the :class:`StepMeter`: batch size, labelled count,
        active modalities, which modalities the batch has, trainable groups and depth, and whether
        the optimiser holds state. One definition for every engine that shares the meter."""
        depth = tuple(sorted(self.plan.depth.items()))
        return (len(batch), n_lab, active, present, (self.trainable, depth), steady)


def begin_round(
    model: nn.Module,
    global_arrays: GroupedArrays,
    plan: TrainPlan,
    data: ClientData,
    state: Mapping[str, np.ndarray],
    techniques: Sequence[Technique],
    *,
    round_: int,
    seed: int,
    modalities: tuple[ModalitySpec, ...],
    num_classes: int,
) -> ClientSetup:
    """The client's download into ``model`` (its plan's groups plus what it keeps), the freezing
    of every group outside the plan's ``train``, and its ``prepare`` hooks (charged apart)."""
    start = time.perf_counter()
    # Dropout and any other global-RNG use inside the model. The CPU generator is seeded directly:
    # torch.manual_seed also queues a CUDA seeding (costly stack capture) on CUDA builds.
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    gen = torch.Generator().manual_seed(seed)
    groups = model_groups(model)
    device = module_device(model)
    # Layers beyond the plan's depth do not exist for this client: not sent, trained or uploaded.
    set_depth(model, plan.depth)
    absent = set(absent_groups(model, plan.depth))
    names = [g for g in groups if g not in absent]
    cost = ClientCost(round=round_, client_id=data.client_id)

    # -- download: the plan's groups, plus anything the client does not keep itself ------------
    new_state: dict[str, np.ndarray] = dict(state)
    need = set(groups_to_receive(model, plan, kept_groups(model, state)))
    received: GroupedArrays = {}
    kept: GroupedArrays = {}
    for g in names:
        if g not in need:
            kept[g] = {k: state[KEEP_PREFIX + k] for k in groups[g]}
        elif g in global_arrays:
            received[g] = global_arrays[g]
        else:
            # Over a network the server sends only what the client does not keep; a client that
            # lost its kept copy (e.g. a restarted node) cannot train this round.
            raise FedmmError(
                f"client {data.client_id}: parameter group {g!r} was neither sent nor kept by this "
                "client (its kept state is gone); the server will send it in full next round"
            )
    set_arrays(model, received)
    set_arrays(model, kept)
    # Arrays a technique sends in the plan (e.g. global prototypes) cross too.
    cost.groups_down = tuple(received)
    cost.bytes_down = nbytes(received) + sum(
        v.nbytes for v in plan.extra.values() if isinstance(v, np.ndarray)
    )

    # -- freeze everything outside the plan's trainable groups ----------------------------------
    trainable = expand_groups(plan.train, names) if plan.train else ()
    lrs = group_lrs(plan, names)
    lr_of = {k: lrs[g] for g in trainable for k in groups[g]}
    params: list[tuple[str, nn.Parameter, float]] = []
    for key, p in model.named_parameters():
        p.requires_grad_(key in lr_of)
        if key in lr_of:
            params.append((key, p, lr_of[key]))

    cctx = ClientContext(data.client_id, round_, plan, new_state, modalities, num_classes, gen, model)
    prepare_hooks = overriding_hooks(techniques, "prepare")
    if prepare_hooks:
        # Data preparation (e.g. completing missing modalities) is client work too: measured apart.
        with _charged(cost, "prepare"):
            for t in prepare_hooks:
                data = t.prepare(cctx, data)
    return ClientSetup(start, plan, data, cost, cctx, new_state, names, tuple(trainable), params, device)


def client_round(
    model: nn.Module,
    global_arrays: GroupedArrays,
    plan: TrainPlan,
    data: ClientData,
    state: Mapping[str, np.ndarray],
    techniques: Sequence[Technique],
    *,
    round_: int,
    seed: int,
    modalities: tuple[ModalitySpec, ...],
    num_classes: int,
    meter: StepMeter | None = None,
) -> ClientResult:
    """Run one client's round on ``model`` (a working instance whose weights are overwritten)."""
    meter = meter if meter is not None else StepMeter()
    setup = begin_round(
        model,
        global_arrays,
        plan,
        data,
        state,
        techniques,
        round_=round_,
        seed=seed,
        modalities=modalities,
        num_classes=num_classes,
    )
    cost, cctx, data, device = setup.cost, setup.cctx, setup.data, setup.device
    gen = cctx.generator
    optimizer = make_optimizer([(p, lr) for _, p, lr in setup.params], plan) if setup.params else None
    loss_hooks = overriding_hooks(techniques, "loss_terms")
    terms_seconds = [0.0] if loss_hooks else None
    terms_flops = 0
    weights = plan.loss_weights

    t_train = time.perf_counter()
    model.train()
    losses: list[float] = []
    steps = 0
    combos = plan.combinations or (Combination(),)
    # Modalities whose encoders took part in at least one optimiser step: only their encoders are
    # uploaded by default, so an encoder is averaged over the clients that trained it this round.
    trained_modalities: set[str] = set()
    if optimizer is not None:
        for combo in combos:
            active = combo.modalities
            combo_key = "all" if active is None else "+".join(active)
            for batch in plan_steps(data, combo, plan, gen, device):
                labelled = batch.labels != MISSING_LABEL
                n_lab = int(labelled.sum())
                # Whether the optimiser already holds state (moments, momentum): it changes the
                # step's peak memory, so a fresh optimiser's first step is a signature of its own.
                steady = bool(optimizer.state)
                sig = setup.step_signature(batch, n_lab, active, tuple(batch.present.any(0).tolist()), steady)
                measured = meter.cache.get(sig)
                # A new step signature is measured once (FLOPs, peak memory, the loss terms'
                # forward FLOPs); every later step with it reuses the figures.
                terms = [0] if measured is None and loss_hooks else None
                with measure_step() if measured is None else contextlib.nullcontext() as m:
                    loss = train_step(
                        model,
                        batch,
                        active,
                        labelled,
                        n_lab,
                        loss_hooks,
                        cctx,
                        weights,
                        optimizer,
                        terms_seconds,
                        terms,
                        plan.max_grad_norm,
                    )
                if measured is None:
                    assert m is not None
                    measured = (int(m.flops), int(m.peak_bytes), terms[0] if terms else 0)
                    meter.cache[sig] = measured
                if loss is not None:
                    losses.append(loss)
                    present = batch.present_for(active).any(0).tolist()
                    trained_modalities.update(m for m, p in zip(batch.modalities, present, strict=True) if p)
                cost.flops += measured[0]
                terms_flops += measured[2]
                cost.flops_by_combination[combo_key] = (
                    cost.flops_by_combination.get(combo_key, 0) + measured[0]
                )
                cost.peak_bytes = max(cost.peak_bytes, measured[1])
                steps += 1
    model.eval()
    cost.flops_by_hook["train"] = cost.flops
    cost.seconds_by_hook["train"] = time.perf_counter() - t_train
    if terms_seconds is not None:
        cost.flops_by_hook["loss_terms"] = terms_flops
        cost.seconds_by_hook["loss_terms"] = terms_seconds[0]
    return finish_round(model, setup, techniques, losses, steps, trained_modalities)


def finish_round(
    model: nn.Module,
    setup: ClientSetup,
    techniques: Sequence[Technique],
    losses: Sequence[float],
    steps: int,
    trained_modalities: Collection[str],
) -> ClientResult:
    """The client's ``report`` and ``upload`` hooks on ``model`` (holding its trained weights),
    its update and kept state, and the rest of its cost."""
    cost, cctx, data, plan, names = setup.cost, setup.cctx, setup.data, setup.plan, setup.names
    new_state = setup.new_state
    # -- report and upload ----------------------------------------------------------------------
    report: dict[str, Any] = {}
    report_hooks = overriding_hooks(techniques, "report")
    if report_hooks:
        with _charged(cost, "report"):
            for t in report_hooks:
                for key, value in t.report(cctx, model, data).items():
                    if key in report:
                        raise ValueError(f"two techniques report the same key {key!r}")
                    report[key] = value
    if plan.upload is not None:
        upload = expand_groups(plan.upload, names)
    else:
        # By default send what was trained: not the encoders of modalities that took no step this
        # round (never held, missing from every batch, or outside every combination the plan ran).
        # They got no gradient, and averaging their unchanged copy would dilute the others'.
        upload = tuple(
            g for g in setup.trainable if (mod := modality_of(g)) is None or mod in trained_modalities
        )
    upload_hooks = overriding_hooks(techniques, "upload")
    if upload_hooks:
        with _charged(cost, "upload"):
            for t in upload_hooks:
                upload = tuple(t.upload(cctx, report, upload))
    update = get_arrays(model, upload)
    for g in expand_groups(plan.keep, names) if plan.keep else ():
        for k, v in get_arrays(model, [g])[g].items():
            new_state[KEEP_PREFIX + k] = v
    cost.groups_up = tuple(update)
    cost.bytes_up = nbytes(update) + sum(v.nbytes for v in report.values() if isinstance(v, np.ndarray))
    cost.steps = steps
    cost.seconds = time.perf_counter() - setup.start
    metrics = {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "steps": float(steps),
        "samples": float(data.num_samples),
    }
    return ClientResult(data.client_id, data.num_samples, update, report, metrics, new_state, cost)


def train_step(
    model: nn.Module,
    batch: Batch,
    active: tuple[str, ...] | None,
    labelled: torch.Tensor,
    n_lab: int,
    loss_hooks: Sequence[Technique],
    cctx: ClientContext | None,
    weights: Mapping[str, float],
    optimizer: torch.optim.Optimizer,
    terms_seconds: list[float] | None = None,
    terms_flops: list[int] | None = None,
    max_grad_norm: float | None = None,
) -> float | None:
    """One optimiser step (gradients clipped to ``max_grad_norm`` in L2 norm when given). With
    ``loss_hooks``, their seconds are added to ``terms_seconds[0]``
    and, when ``terms_flops`` is given (a measured step), their forward FLOPs to ``terms_flops[0]``."""
    outputs = model(batch, active)
    loss: torch.Tensor | None = None
    if n_lab:
        logits = outputs.logits if n_lab == len(batch) else outputs.logits[labelled]
        labels = batch.labels if n_lab == len(batch) else batch.labels[labelled]
        loss = weights.get("ce", 1.0) * F.cross_entropy(logits, labels)
    if loss_hooks:
        t0 = time.perf_counter()
        # Nested in the step's measurement: this counter sees the terms only, the outer one all.
        assert cctx is not None  # loss hooks run inside a client round
        with measure_step(track_memory=False) if terms_flops is not None else nullcontext() as m:
            for t in loss_hooks:
                for name, term in t.loss_terms(cctx, batch, outputs).items():
                    term = weights.get(name, 1.0) * term
                    loss = term if loss is None else loss + term
        if terms_seconds is not None:
            terms_seconds[0] += time.perf_counter() - t0
        if terms_flops is not None and m is not None:
            terms_flops[0] += int(m.flops)
    if loss is None:
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    return float(loss.detach())


def measure_train_step(
    model: nn.Module, batch: Batch, active: tuple[str, ...] | None = None, *, track_memory: bool = False
) -> StepMeasurement:
    """Measure one training step exactly as a client runs it (forward with only ``active``
    modalities, cross-entropy on the labelled samples, backward, optimiser step), without
    changing ``model``'s weights (SGD with learning rate 0 over every parameter).

    For a technique that plans by measured cost (FlexMod's per-combination budget): the FLOPs
    are what the ledger charges a client for the same step. ``model`` is put in training mode
    and its gradients are overwritten: pass a working copy.
    """
    model.train()
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=0.0)
    labelled = batch.labels != MISSING_LABEL
    n_lab = int(labelled.sum())
    if n_lab == 0:
        raise FedmmError("measure_train_step needs a batch with labelled samples")
    with measure_step(track_memory=track_memory) as m:
        train_step(model, batch, active, labelled, n_lab, (), None, {}, optimizer)
    return m


def overriding_hooks(techniques: Sequence[Technique], hook: str) -> list[Technique]:
    """The techniques that override client ``hook``: only those run, and are measured."""
    return [t for t in techniques if getattr(type(t), hook) is not getattr(Technique, hook)]


@contextmanager
def _charged(cost: ClientCost, hook: str) -> Iterator[None]:
    """Charge the block's torch FLOPs and seconds to ``cost``'s ``hook``."""
    t0 = time.perf_counter()
    with measure_step(track_memory=False) as m:
        yield
    cost.seconds_by_hook[hook] = cost.seconds_by_hook.get(hook, 0.0) + time.perf_counter() - t0
    cost.flops_by_hook[hook] = cost.flops_by_hook.get(hook, 0) + int(m.flops)


def groups_to_receive(model: nn.Module, plan: TrainPlan, kept: Collection[str]) -> list[str]:
    """The parameter groups a client must be sent this round: the plan's downloads plus every
    group that exists at the plan's depth and that the client does not keep (``kept``).

    The client decides with its own kept state; a server that sends over a network decides the
    same with its mirror of what each client keeps."""
    absent = set(absent_groups(model, plan.depth))
    names = [g for g in model_groups(model) if g not in absent]
    download = set(expand_groups(plan.download, names))
    return [g for g in names if g in download or g not in kept]


def kept_groups(model: nn.Module, state: Mapping[str, np.ndarray]) -> list[str]:
    """The parameter groups a client holds whole in its kept state (they need no download)."""
    return [
        g for g, keys in model_groups(model).items() if keys and all(KEEP_PREFIX + k in state for k in keys)
    ]


__all__ = [
    "ClientSetup",
    "StepMeter",
    "begin_round",
    "client_round",
    "derive_seed",
    "finish_round",
    "group_lrs",
    "groups_to_receive",
    "kept_groups",
    "make_optimizer",
    "measure_train_step",
    "overriding_hooks",
    "plan_steps",
    "train_step",
]
