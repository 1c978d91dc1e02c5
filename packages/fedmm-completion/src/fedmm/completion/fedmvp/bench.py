"""``fedmm bench fedmvp``: FedMVP vs zero-filling, masking, dropping, and the same public pairs.

FedMVP (Che, Wang, Liu, Ma, arXiv 2406.11048) reports up to +6.2 points on CUB-200 at 80 % missing
modality. The issue's target: FedMVP **≥ 5 points above zero-filling**.

Protocol (protocol "2", the first under the seed harness; version "1" ran one seed):

* **Data.** Three settings, each its own comparison group (``run.arm(..., group=...)``):

  - ``av-digits`` (unsuffixed keys): av-digits (fixed data seed), 10 clients, Dirichlet α = 0.5;
  - ``hapt`` (keys ``*_hapt``): UCI HAPT windows, one client per training subject (21, natural);
  - ``av-digits-hard`` (keys ``*_hard``): av-digits with :data:`HARD_AV_DIGITS` (each modality
    weak alone: more pixel noise, larger occlusions, noisier speech), otherwise as ``av-digits``.
    **Added after the +5 pp target was missed on the headline ``av-digits`` setting** (+2.7 pp
    there, git ``f631f4f``); it is kept, and now runs on the normal seed list like the others
    (it used to be a full-only loop over five fixed seeds).

  In every setting ``incomplete_fraction`` = 0.8 of the training samples lose exactly one
  modality (about half each) and 10 % of the training pool (drawn before the modalities are
  dropped, so complete pairs) is the server's labelled **public split**.
* **Model.** Every arm trains the same :class:`~fedmm.completion.fedmvp.model.FedMVPModel` from the same
  initial weights: frozen per-modality extractors (core's MLP / 1-D conv encoders, 64-d,
  pre-trained on the public split, then frozen — our stand-in for the paper's backbones; shared
  by all arms, so every arm already gets this use of the public split) and a learnable joint
  encoder, common encoder and classifier. FedAvg, Adam 1e-3, batch 32; local epochs 2
  (av-digits, hard) / 1 (hapt); every client every round.
* **Arms.**

  - ``zero_fill``: missing values set to zero and fed as observed; cross-entropy only. The
    baseline of each group (first recorded arm).
  - ``masked`` (stronger than the issue asks for): missing modalities stay missing (masked out
    of the joint encoder).
  - ``drop``: clients train only on their complete samples. It trains on fewer samples **by
    definition**, so its lower steps and FLOPs are exempt (``claims``); nothing else is.
  - ``zero_fill_public`` (**new in protocol 2**): ``zero_fill`` plus the public split's labelled
    pairs as ordinary training data. FedMVP uses those pairs at the clients (its completion pool
    hands every incomplete sample a real same-class public modality), so the fair counterpart is
    a baseline that trains on the very same pairs. The public split is dealt out at random (run
    seed), in equal shares, to the clients and appended to their data, and each client is held
    to its baseline sample count: every round it trains on a fresh random draw of ``n_k`` of its
    ``n_k`` + share samples (:class:`SampleBudget`). So the arm has the same clients, local steps,
    batch sizes and FLOPs as ``zero_fill``; only what it trains on differs. (Serving the split as
    an extra always-on client was the alternative; it changes the number of clients per round
    and adds ~10 % steps, so its gain would mix data and compute.)
  - ``fedmvp``: completion by :class:`~fedmm.completion.fedmvp.completion.PoolCompleter` over the
    public split (coarse: the class; fine: the nearest available modality), MCM + RAM, CKA
    aggregation with the public split as probe set. One completion per incomplete sample, so
    the same samples and steps as the baselines.
  - ``complete_data``: the same model with nothing missing (the ceiling of recovering the
    clients' own missing values; it does not get the public pairs).
  - ``av-digits-hard`` only — ``fedmvp_copies``: each incomplete sample completed
    ``HARD_COPIES`` = 3 times (``copies``, our reading of the paper's prompt augmentation;
    **added together with the hard setting, after the target was missed**). At 80 % incomplete
    that is ≈2.6× the samples per local epoch and so ≈2.5× the local steps: the arm is listed in
    ``unequal_budget`` and is not a fair comparison by itself. ``fedmvp_copies_matched`` (**new
    in protocol 2**): the same completions held to the baselines' samples per round (a fresh
    random draw of ``n_k`` of the client's originals and copies each round,
    :class:`SampleBudget`), so the baselines' local steps: it isolates the augmentation from the
    extra compute. Both are reported.

* **Rounds.** av-digits 30 (quick) / 80 (full); hapt 15 / 40; av-digits-hard 30 in both (as it
  was measured in protocol 1); smoke: 1 round on fixed small subsets (240 training / 100 test
  samples; 3 clients on av-digits, hapt's first 3 subjects), extractors pre-trained 2 epochs.
* **Cost.** About 4–5 minutes per seed for quick on one free core (protocol 1's quick took
  148 s for the av-digits and hapt arms, its hard setting 72 s a seed; protocol 2 adds three
  arm runs a setting at most). Measured seed 0: 1 563 s wall on a 2-core machine shared with five
  other jobs. hapt is half of it (21 clients; FedMVP's CKA embeds the probe with every upload).
* **Seeds.** quick 0, 1, 2; full 0–4. The run seed draws the public split, the partition, the
  incomplete samples, the public pairs' shares, the extractors' pre-training, initial weights and
  data order; the datasets keep their fixed data seed.
* **Budget.** Same clients, rounds, first round, optimiser and (except ``drop``,
  ``fedmvp_copies``) local steps in every arm; the harness reports ``steps_/flops_/rounds_/
  clients_round1_<arm>`` (suffixed ``_hapt`` / ``_hard`` by setting: ``steps_fedmvp_hapt``) and
  lists ``unequal_budget``. FLOPs are the clients' measured work (``client_flops``, hooks
  included; the retrieval completion is numpy work the FLOP counter does not see — its time is
  ``completion_seconds``). FedMVP's MCM / RAM terms are part of its training FLOPs: at equal
  steps its arms spend 4–6 % more FLOPs than the baselines (seed 0: 6.2 % on av-digits, 4.3 % on
  hapt), so on av-digits they appear in ``unequal_budget`` on ``flops`` (the method's own cost;
  nothing is exempted). ``fedmvp_copies``
  appears there on steps and FLOPs (≈2.5×), by design of that arm.
* **Metric.** Fused test accuracy (both modalities): mean of the last 3 rounds' evaluations
  (``accuracy_<arm>``). Single-modality accuracy of every arm's final model
  (``accuracy/<m>`` of core's evaluation, last round): ``accuracy_<m>_only_test_<arm>``
  (FedMVP's also unsuffixed, ``accuracy_<m>_only_test``, as in protocol 1).
* **Target.** ``target_met``: the issue's literal target, ``gain_vs_zero_fill_pp`` ≥ 5 on the
  av-digits seed mean. ``target_met_public``: the same against ``zero_fill_public`` — the fair
  reading, since only FedMVP trains on the public pairs otherwise. The hard setting reports
  ``target_met_hard`` (``fedmvp_copies`` vs zero-fill, the protocol-1 headline),
  ``target_met_hard_matched`` (``fedmvp_copies_matched``) and ``target_met_hard_public``
  (``fedmvp_copies_matched`` vs ``zero_fill_public``); all on seed means. Gains are in
  percentage points of the seed-mean accuracies (``gain_vs_<arm>_pp``; hapt / hard suffixed).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from fedmm.completion.fedmvp.completion import PoolCompleter
from fedmm.completion.fedmvp.model import FedMVPModel, pretrain_extractors
from fedmm.completion.fedmvp.technique import FedMVP
from fedmm.core.data.registry import federate, load_central
from fedmm.core.data.types import CentralDataset, ClientData, FederatedDataset, Partition, SampleSet
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.federation import Federation
from fedmm.core.plots import plot_compare
from fedmm.core.protocol import ClientContext, FedAvg, Technique

SMOOTH = 3
FEATURES = 64
BATCH = 32
TARGET_PP = 5.0

# A harder av-digits: each modality weak alone (more pixel noise, larger occlusions, noisier
# speech), closer to FedMVP's fine-grained regime where a missing modality costs more.
# Added after the +5 pp target was missed on the default av-digits (see the module docstring).
HARD_AV_DIGITS = {"image_noise": 0.5, "occlusion": 4, "audio_snr_db": -10.0}
HARD_COPIES = 3


class SampleBudget(Technique):
    """Hold client ``k`` to ``samples[k]`` samples a round: each round it trains on a fresh random
    draw (without replacement, from the round's generator) of that many of its samples. An arm
    whose clients hold more samples (appended public pairs, augmented completions) then runs the
    baselines' local steps, with the same batch sizes, so the same training FLOPs.

    It must come after any technique whose ``prepare`` enlarges the data (FedMVP's completion)."""

    name: ClassVar[str] = "sample_budget"

    def __init__(self, samples: Mapping[int, int]) -> None:
        self.samples = {int(k): int(v) for k, v in samples.items()}

    def config(self) -> dict[str, Any]:
        return {"samples": {str(k): v for k, v in self.samples.items()}}

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        keep = self.samples[cctx.client_id]
        if data.num_samples <= keep:
            return data
        pick = torch.randperm(data.num_samples, generator=cctx.generator)[:keep].numpy()
        return dataclasses.replace(data, indices=data.indices[np.sort(pick)])


def client_sizes(data: FederatedDataset) -> dict[int, int]:
    """Each client's number of samples in ``data``."""
    return {c: len(data.partition.of(c)) for c in range(data.num_clients)}


def _zero_filled(data: FederatedDataset) -> FederatedDataset:
    """Missing values replaced by zeros and treated as present (the model sees the zeros)."""
    train = data.train
    feats = {m: train.features[m].copy() for m in train.modality_names}
    for j, m in enumerate(train.modality_names):
        feats[m][~train.present[:, j]] = 0
    filled = train.with_columns(features=feats, present=np.ones_like(train.present), generated=~train.present)
    return dataclasses.replace(data, train=filled)


def _drop_incomplete(data: FederatedDataset) -> FederatedDataset:
    complete = np.asarray(data.train.present.all(axis=1), dtype=bool)
    lists = [idx[complete[idx]] for idx in (data.partition.of(c) for c in range(data.num_clients))]
    return dataclasses.replace(data, partition=Partition.from_lists(lists))


def with_public_pairs(data: FederatedDataset, public: SampleSet, seed: int) -> FederatedDataset:
    """``data`` with the ``public`` samples dealt out at random, in equal shares, to the clients
    and appended to their data (each public sample goes to exactly one client)."""
    n = len(data.train)
    train = SampleSet(
        data.train.modalities,
        {m: np.concatenate([data.train.features[m], public.features[m]]) for m in data.train.modality_names},
        np.concatenate([data.train.labels, public.labels]),
        np.concatenate([data.train.present, public.present]),
        np.concatenate([data.train.generated, public.generated]),
    )
    shares = np.array_split(np.random.default_rng(seed).permutation(len(public)) + n, data.num_clients)
    lists = [np.concatenate([data.partition.of(c), shares[c]]) for c in range(data.num_clients)]
    return dataclasses.replace(data, train=train, partition=Partition.from_lists(lists))


def _shrink(central: CentralDataset, train: int, test: int) -> CentralDataset:
    """A fixed small subset (smoke mode): the first ``train`` subjects' worth of samples when the
    data has natural groups, else a fixed random ``train`` samples; a fixed ``test`` test samples."""
    rng = np.random.default_rng(0)
    if central.train_groups is not None:
        groups = central.train_groups
        keep_groups = np.unique(groups)[:3]
        idx = np.flatnonzero(np.isin(groups, keep_groups))
        idx = np.sort(rng.permutation(idx)[:train])
    else:
        idx = np.sort(rng.permutation(len(central.train))[:train])
    tidx = np.sort(rng.permutation(len(central.test))[:test])
    return dataclasses.replace(
        central,
        train=central.train.take(idx),
        test=central.test.take(tidx),
        train_groups=None if central.train_groups is None else central.train_groups[idx],
    )


def compare(
    run: SeedRun,
    central: CentralDataset,
    *,
    group: str,
    suffix: str = "",
    rounds: int,
    federate_options: dict[str, Any],
    encoders: dict[str, str],
    local_epochs: int,
    missing: float = 0.8,
    copies: int = 1,
    extractor_epochs: int = 60,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """One seed of one setting: every arm, each recorded as ``run.arm(arm + suffix, ..., group=group)``.

    Returns the per-seed record (unsuffixed keys) and each arm's per-round metrics."""
    seed = run.seed
    data = federate(
        central, incomplete_fraction=missing, validation_fraction=0.1, seed=seed, **federate_options
    )
    complete = federate(central, validation_fraction=0.1, seed=seed, **federate_options)
    public = data.validation
    assert public is not None
    names = list(data.train.modality_names)
    extractors = pretrain_extractors(
        public, data.num_classes, encoders, FEATURES, epochs=extractor_epochs, seed=seed
    )
    torch.manual_seed(seed)
    model = FedMVPModel(data.modalities, extractors, dict.fromkeys(names, FEATURES), data.num_classes)
    budget = client_sizes(data)
    # (dataset, techniques, claims): the budget measures an arm is lower on by definition.
    arms: dict[str, tuple[FederatedDataset, list[Technique], tuple[str, ...]]] = {
        "zero_fill": (_zero_filled(data), [], ()),
        "masked": (data, [], ()),
        "drop": (_drop_incomplete(data), [], ("steps", "flops")),
        "zero_fill_public": (with_public_pairs(_zero_filled(data), public, seed), [SampleBudget(budget)], ()),
        "fedmvp": (data, [FedMVP(completer=PoolCompleter(public), probe=public)], ()),
    }
    if copies > 1:
        arms["fedmvp_copies"] = (
            data,
            [FedMVP(completer=PoolCompleter(public, copies=copies), probe=public)],
            (),
        )
        arms["fedmvp_copies_matched"] = (
            data,
            [FedMVP(completer=PoolCompleter(public, copies=copies), probe=public), SampleBudget(budget)],
            (),
        )
    arms["complete_data"] = (complete, [], ())
    out: dict[str, Any] = {
        "missing_rate": missing,
        "incomplete_fraction_measured": float(1 - data.train.present.all(axis=1).mean()),
        "rounds": rounds,
        "public_samples": len(public),
    }
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, (d, techniques, claims) in arms.items():
        t0 = time.perf_counter()
        strategy = FedAvg(techniques, local_epochs=local_epochs, batch_size=BATCH, optimizer="adam", lr=1e-3)
        history = Federation(copy.deepcopy(model), d, strategy, seed=seed, eval_every=1).run(
            rounds, progress=False
        )
        run.arm(f"{name}{suffix}", history, group=group, claims=claims)
        curves[name] = history.rounds
        last = history.rounds[-1]
        out[f"accuracy_{name}"] = float(np.mean([r["accuracy"] for r in history.rounds][-SMOOTH:]))
        out[f"seconds_{name}"] = time.perf_counter() - t0
        for m in names:
            out[f"accuracy_{m}_only_test_{name}"] = float(last[f"accuracy/{m}"])
            if name == "fedmvp":
                out[f"accuracy_{m}_only_test"] = float(last[f"accuracy/{m}"])
        if name == "fedmvp":
            tot = history.ledger.totals()
            out["completion_seconds"] = float(tot["seconds_by_hook/prepare"])
            out["completion_flops"] = float(tot["flops_by_hook/prepare"])
    for base in ("zero_fill", "masked", "drop", "zero_fill_public", "complete_data"):
        out[f"gain_vs_{base}_pp"] = 100 * (out["accuracy_fedmvp"] - out[f"accuracy_{base}"])
    if copies > 1:
        out["copies"] = copies
        for arm, tag in (("fedmvp_copies", "copies"), ("fedmvp_copies_matched", "copies_matched")):
            out[f"gain_vs_zero_fill_pp_{tag}"] = 100 * (out[f"accuracy_{arm}"] - out["accuracy_zero_fill"])
            out[f"gain_vs_zero_fill_public_pp_{tag}"] = 100 * (
                out[f"accuracy_{arm}"] - out["accuracy_zero_fill_public"]
            )
    out["zero_fill_gap_to_complete_data_pp"] = 100 * (
        out["accuracy_complete_data"] - out["accuracy_zero_fill"]
    )
    out["public_gain_over_zero_fill_pp"] = 100 * (
        out["accuracy_zero_fill_public"] - out["accuracy_zero_fill"]
    )
    return out, curves


_SUFFIX = {"av-digits": "", "hapt": "_hapt", "av-digits-hard": "_hard"}


def _setup(run: SeedRun) -> dict[str, CentralDataset]:
    loaded = {
        "av-digits": load_central("av-digits", progress=run.progress),
        "hapt": load_central("hapt", progress=run.progress),
        "av-digits-hard": load_central("av-digits", progress=run.progress, **HARD_AV_DIGITS),
    }
    if run.smoke:
        return {k: _shrink(v, 240, 100) for k, v in loaded.items()}
    return loaded


def _run_seed(run: SeedRun) -> dict[str, Any]:
    centrals: dict[str, CentralDataset] = run.shared
    av_options: dict[str, Any] = {
        "clients": run.pick(smoke=3, quick=10, full=10),
        "partition": "dirichlet",
        "alpha": 0.5,
    }
    av = {"image": "mlp", "audio": "conv1d"}
    extractor_epochs = run.pick(smoke=2, quick=60, full=60)
    settings: dict[str, dict[str, Any]] = {
        "av-digits": dict(
            rounds=run.pick(smoke=1, quick=30, full=80),
            federate_options=av_options,
            encoders=av,
            local_epochs=2,
        ),
        "hapt": dict(
            rounds=run.pick(smoke=1, quick=15, full=40),
            # One client per subject: 21 in the real data, the few kept subjects in smoke.
            federate_options={"clients": None if run.smoke else 21, "partition": "natural"},
            encoders={"acc": "conv1d", "gyro": "conv1d"},
            local_epochs=1,
        ),
        "av-digits-hard": dict(
            rounds=run.pick(smoke=1, quick=30, full=30),
            federate_options=av_options,
            encoders=av,
            local_epochs=2,
            copies=HARD_COPIES,
        ),
    }
    out: dict[str, Any] = {}
    for group, options in settings.items():
        res, curves = compare(
            run,
            centrals[group],
            group=group,
            suffix=_SUFFIX[group],
            extractor_epochs=extractor_epochs,
            **options,
        )
        out.update({f"{k}{_SUFFIX[group]}": v for k, v in res.items()})
        if run.plots_dir is not None:
            plot_compare(curves, Path(run.plots_dir) / f"fedmvp_{group}_seed{run.seed}.png")
    return out


def _finish(out: dict[str, Any]) -> None:
    """Targets from the seed means (the gains are linear, so their means are the mean gains)."""
    out["target_met"] = bool(out["gain_vs_zero_fill_pp"] >= TARGET_PP)
    out["target_met_public"] = bool(out["gain_vs_zero_fill_public_pp"] >= TARGET_PP)
    out["target_met_hard"] = bool(out["gain_vs_zero_fill_pp_copies_hard"] >= TARGET_PP)
    out["target_met_hard_matched"] = bool(out["gain_vs_zero_fill_pp_copies_matched_hard"] >= TARGET_PP)
    out["target_met_hard_public"] = bool(out["gain_vs_zero_fill_public_pp_copies_matched_hard"] >= TARGET_PP)
    # Protocol-1 names of the hard setting's mean gains (there the unsuffixed key was the list).
    out["gain_vs_zero_fill_pp_hard_mean"] = out["gain_vs_zero_fill_pp_hard"]
    out["gain_vs_zero_fill_pp_copies_hard_mean"] = out["gain_vs_zero_fill_pp_copies_hard"]
    out["hard_av_digits_options"] = dict(HARD_AV_DIGITS)
    out["models"] = "frozen core encoders (64-d) pre-trained on the public split + FedMVP's joint encoder"


FEDMVP = Benchmark(
    "fedmvp",
    _run_seed,
    setup=_setup,
    finish=_finish,
    headline=(
        "accuracy_zero_fill",
        "accuracy_masked",
        "accuracy_drop",
        "accuracy_zero_fill_public",
        "accuracy_fedmvp",
        "accuracy_complete_data",
        "gain_vs_zero_fill_pp",
        "gain_vs_zero_fill_public_pp",
        "target_met",
        "target_met_public",
        "accuracy_zero_fill_hapt",
        "accuracy_masked_hapt",
        "accuracy_drop_hapt",
        "accuracy_zero_fill_public_hapt",
        "accuracy_fedmvp_hapt",
        "accuracy_complete_data_hapt",
        "gain_vs_zero_fill_pp_hapt",
        "gain_vs_zero_fill_public_pp_hapt",
        "accuracy_zero_fill_hard",
        "accuracy_zero_fill_public_hard",
        "accuracy_fedmvp_hard",
        "accuracy_fedmvp_copies_hard",
        "accuracy_fedmvp_copies_matched_hard",
        "accuracy_complete_data_hard",
        "gain_vs_zero_fill_pp_hard_mean",
        "gain_vs_zero_fill_pp_copies_hard_mean",
        "gain_vs_zero_fill_pp_copies_matched_hard",
        "gain_vs_zero_fill_public_pp_copies_matched_hard",
        "target_met_hard",
        "target_met_hard_matched",
        "target_met_hard_public",
    ),
    protocol="2",
    draws_plots=True,
)
