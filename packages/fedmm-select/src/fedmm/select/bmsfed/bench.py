"""``fedmm bench bmsfed``: BMSFed against random selection on av-digits with modality imbalance.

BMSFed (Fan et al., ECCV 2024, arXiv 2401.00403) claims that balanced modality selection raises
the weak modality's accuracy without lowering the overall accuracy.

Protocol (protocol "3"):

* **Data.** av-digits (fixed data seed), 20 clients, Dirichlet α = 0.5, 30 % of the clients hold
  one modality only (``unimodal_fraction=0.3``). ``image`` is the strong modality, ``audio`` the
  weak one.
* **Model and optimiser.** Concat fusion, encoders ``{"image": "mlp", "audio": "conv1d"}`` (as in
  core's FedAvg bench); K = 5 clients per round after the first; 5 local epochs of SGD
  (momentum 0.9, batch 32) at one learning rate, :data:`LR`.
* **Settings chosen on the tuning seeds only.** :data:`LR`, χ and λ_ME (:data:`BMSFED_ARGS`) are
  the choice of ``fedmm bench bmsfed-tuning`` (protocol 1, below: seeds 0–4, its choice rule
  fixed before it ran), committed in ``docs/results/bmsfed-tuning-quick.json``; they were set
  here before any protocol-3 run.
* **Arms** (same data, partition, initial weights, rounds, optimiser, local epochs and the same
  all-clients first round):

  - ``random``: uniform random selection of K clients after an all-clients round 1
    (``AllClientsFirstRound``);
  - ``divfl``: diverse client selection without modality balance — BMSFed's selection with
    χ = ∞ (facility location over the clients' update vectors, ``S_M`` only) and no ME loss —
    the paper's main comparison;
  - ``no_me``: BMSFed's selection without the ME loss (``me_weight=0``), which isolates the loss;
  - ``bmsfed``: BMSFed (χ, λ_ME from the tuning).

  The harness checks the budgets (``clients_round1_*``, ``steps_*``, ``flops_*``;
  ``unequal_budget``); steps and FLOPs may differ by which clients are picked (client sizes
  differ; ``S_I`` clients train only the weak path): that is the selection itself, reported.
* **Rounds.** quick 60, full 150 (round 1 included); smoke 2 rounds, 8 clients, K = 3, 1 local
  epoch (only exercises every arm).
* **Seeds.** quick 0, 1, 2; full 0–4 — the tuning seeds, so ``held_out`` is false there; the
  verdict belongs to a run on other seeds (``--seeds 10-14``), whose record says ``held_out``.
* **Metric.** Accuracy = the mean of the last ``SMOOTH`` = 5 rounds' test evaluations. Weak-modality
  accuracy is core's ``accuracy/audio`` (the global model given audio only);
  ``weak_modality_proto_accuracy_*`` is the nearest-class-prototype accuracy of the audio
  encoder's test embeddings against prototypes of the whole training set under the final model.
* **Target** (on the seed means): ``weak_modality_accuracy_bmsfed`` ≥
  ``weak_modality_accuracy_random`` + 0.03 and ≥ ``weak_modality_accuracy_divfl``, and
  ``accuracy_bmsfed`` ≥ ``accuracy_random`` (``target_met``).

Changed from protocol "2" (protocol 2's files are kept as ``bmsfed-*.protocol2.json``): one
learning rate, and χ and λ, chosen by the tuning benchmark on seeds 0–4 (protocol 2 used χ = 1.2
and λ = 0.02 tuned on seeds 0–5, every seed it reported on, and reported two learning rates, the
headline one chosen after the first missed the target); the ``divfl`` arm is new; the target adds
"≥ DivFL's weak-modality accuracy"; a client holding only the weak modality may now join ``S_I``
(a BMSFed change, see ``docs/methods/bmsfed.md``).

Protocol of ``bmsfed-tuning`` — choosing BMSFed's learning rate, χ and λ on the tuning seeds only.

The ``bmsfed`` benchmark's protocol 2 used χ = 1.2 and λ = 0.02 chosen on seeds 0–5 (every seed it
reported on) and a headline learning rate chosen after its first one missed the target. This
benchmark makes the choice a recorded measurement, made before the protocol that uses it.

Its protocol (protocol "1"):

* **Data, model, optimiser, rounds.** Exactly those of ``fedmm bench bmsfed`` (av-digits, 20
  clients, Dirichlet α = 0.5, 30 % unimodal clients, audio the weak modality, K = 5, 5 local
  epochs of SGD with momentum 0.9, batch 32; quick 60 rounds, full 150, smoke 2 on 8 clients).
* **Grid** (:data:`GRID`): learning rate ∈ {0.01, 0.05} × χ ∈ {1.2, 2.0} × λ_ME ∈ {0.02, 0.2, 2.0}
  (λ = 2.0 is the paper's; χ = 2.0 is in the official run script; 0.02 and 1.2 are protocol 2's).
  Each cell is a BMSFed arm; each learning rate also runs the random baseline with the same
  all-clients first round (``AllClientsFirstRound``), its own comparison ``group``.
* **Seeds.** quick and full 0–4: the tuning seeds, and only them. No other seed may be used to
  choose BMSFed's settings; a verdict on the chosen settings belongs to other seeds.
* **Metric.** As ``bmsfed``: accuracy and weak-modality (audio-only) accuracy, each the mean of
  the last 5 evaluations. Per cell: ``weak_gain_<cell>`` and ``accuracy_gain_<cell>`` against
  random at the same learning rate, in accuracy points (0.01 = 1 pp).
* **Choice rule** (fixed here, before any run): among the cells whose mean ``accuracy_gain`` over
  the seeds is ≥ 0, the one with the largest mean ``weak_gain``; if none, the cell with the
  largest mean ``accuracy_gain``. Ties go to the paper's λ = 2.0, then the smaller χ. The result
  is ``chosen`` (its cell name), ``chosen_lr``, ``chosen_chi``, ``chosen_me_weight``. The
  ``bmsfed`` benchmark's next protocol takes these values, and BMSFed's documented defaults
  follow them where they differ from the paper's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from fedmm.core.arguments import integer
from fedmm.core.data.registry import federate, load_central
from fedmm.core.data.types import CentralDataset, FederatedDataset, SampleSet
from fedmm.core.embeddings import collect_embeddings
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.federation import Federation
from fedmm.core.maths.prototypes import class_prototypes, nearest_prototype_accuracy
from fedmm.core.models.model import late_fusion
from fedmm.core.plots import plot_compare
from fedmm.core.protocol import FedAvg, RoundContext, Technique
from fedmm.select.bmsfed.technique import BMSFed

STRONG, WEAK = "image", "audio"
SMOOTH = 5
CLIENTS, K = 20, 5
UNIMODAL_FRACTION = 0.3
# Chosen by `fedmm bench bmsfed-tuning` on seeds 0-4 (docs/results/bmsfed-tuning-quick.json).
# Its choice, "lr0.01_chi2.0_me0.2", is the only cell whose overall accuracy did not fall below random's.
LR = 0.01
BMSFED_ARGS: dict[str, Any] = dict(chi=2.0, me_weight=0.2)
# A target verdict needs seeds the settings were not chosen on.
TUNING_SEEDS = (0, 1, 2, 3, 4)


class AllClientsFirstRound(Technique):
    """Random selection with BMSFed's first round: round 1 trains every client; each later round
    samples ``clients_per_round`` clients uniformly (the default sampling, same random stream).

    A benchmark device, so that the random baseline starts from the same kind of first round as
    BMSFed (whose round 1 trains and aggregates every client).
    """

    name: ClassVar[str] = "all_clients_first_round"
    owns: ClassVar[frozenset[str]] = frozenset({"select_clients"})

    def __init__(self, clients_per_round: int) -> None:
        self.clients_per_round = integer(self.name, "clients_per_round", clients_per_round, low=1)
        self._started = False

    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        cands = np.asarray(candidates, dtype=np.int64)
        if not self._started or self.clients_per_round >= cands.shape[0]:
            return cands
        return np.sort(ctx.rng.choice(cands, size=self.clients_per_round, replace=False)).astype(np.int64)

    def after_round(self, ctx: RoundContext, metrics: dict[str, Any]) -> None:
        self._started = True

    def state_dict(self) -> dict[str, Any]:
        return {"started": self._started}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._started = bool(state["started"])

    def config(self) -> dict[str, Any]:
        return {"clients_per_round": self.clients_per_round}


def _embeddings(model: torch.nn.Module, samples: SampleSet, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """The labelled samples' ``modality`` embeddings and labels (those that have the modality)."""
    idx = np.flatnonzero(samples.labels >= 0)
    batches = (samples.batch(idx[start : start + 512]) for start in range(0, idx.shape[0], 512))
    return collect_embeddings(model, batches).labelled(modality)


def _proto_accuracy(model: torch.nn.Module, data: FederatedDataset, modality: str) -> float:
    z_train, y_train = _embeddings(model, data.train, modality)
    protos, counts = class_prototypes(z_train, y_train, data.num_classes)
    z_test, y_test = _embeddings(model, data.test, modality)
    return nearest_prototype_accuracy(z_test, y_test, protos, counts)


def train_arm(
    run: SeedRun,
    arm: str,
    group: str,
    data: FederatedDataset,
    techniques: list[Technique],
    *,
    rounds: int,
    k: int,
    lr: float,
    epochs: int,
    curves: dict[str, list[dict[str, Any]]] | None,
) -> dict[str, float]:
    torch.manual_seed(run.seed)  # the same initial weights for every arm
    model = late_fusion(
        data.modalities, data.num_classes, fusion="concat", encoders={STRONG: "mlp", WEAK: "conv1d"}
    )
    strategy = FedAvg(
        techniques=techniques, clients_per_round=k, local_epochs=epochs, batch_size=32, lr=lr, momentum=0.9
    )
    fed = Federation(model, data, strategy, seed=run.seed, eval_every=1)
    history = fed.run(rounds, progress=False)
    run.arm(arm, history, group=group)
    if curves is not None:
        curves[arm] = history.rounds
    last = [r for r in history.rounds if "accuracy" in r][-SMOOTH:]
    return {
        "accuracy": float(np.mean([r["accuracy"] for r in last])),
        "weak": float(np.mean([r[f"accuracy/{WEAK}"] for r in last])),
        "strong": float(np.mean([r[f"accuracy/{STRONG}"] for r in last])),
        "proto": _proto_accuracy(fed.model, data, WEAK),
        "client_rounds": float(sum(r["selected"] for r in history.rounds)),
    }


ARMS = ("random", "divfl", "no_me", "bmsfed")


def _arms(k: int) -> dict[str, list[Technique]]:
    return {
        # The baseline first: the harness compares each arm's budget with it.
        "random": [AllClientsFirstRound(k)],
        "divfl": [BMSFed(clients_per_round=k, chi=math.inf, me_weight=0.0)],
        "no_me": [BMSFed(clients_per_round=k, **{**BMSFED_ARGS, "me_weight": 0.0})],
        "bmsfed": [BMSFed(clients_per_round=k, **BMSFED_ARGS)],
    }


def _setting(run: SeedRun) -> tuple[FederatedDataset, int, int, int, int]:
    """The seed's data and schedule, shared by ``bmsfed`` and ``bmsfed-tuning``:
    ``(data, rounds, clients, clients per round, local epochs)``."""
    central: CentralDataset = run.shared
    clients = 8 if run.smoke else CLIENTS
    data = federate(
        central,
        clients=clients,
        partition="dirichlet",
        alpha=0.5,
        unimodal_fraction=UNIMODAL_FRACTION,
        seed=run.seed,
    )
    rounds = run.pick(smoke=2, quick=60, full=150)
    return data, rounds, clients, 3 if run.smoke else K, 1 if run.smoke else 5


def _run_seed(run: SeedRun) -> dict[str, Any]:
    """The four arms on ``run.seed``."""
    data, rounds, clients, k, epochs = _setting(run)
    out: dict[str, Any] = {
        "rounds": rounds,
        "clients": clients,
        "clients_per_round": k,
        "unimodal_fraction": UNIMODAL_FRACTION,
        "alpha": 0.5,
        "weak_modality": WEAK,
        "bmsfed_args": dict(BMSFED_ARGS),
        "tuning_seeds": list(TUNING_SEEDS),
        "smoothed_over_last_rounds": SMOOTH,
        "lr": LR,
    }
    curves: dict[str, list[dict[str, Any]]] | None = {} if run.plots_dir is not None else None
    res: dict[str, dict[str, float]] = {}
    for arm, techniques in _arms(k).items():
        res[arm] = train_arm(
            run, arm, "av-digits", data, techniques, rounds=rounds, k=k, lr=LR, epochs=epochs, curves=curves
        )
    for arm, r in res.items():
        out[f"accuracy_{arm}"] = r["accuracy"]
        out[f"weak_modality_accuracy_{arm}"] = r["weak"]
        out[f"strong_modality_accuracy_{arm}"] = r["strong"]
        out[f"weak_modality_proto_accuracy_{arm}"] = r["proto"]
        out[f"client_rounds_{arm}"] = r["client_rounds"]
    out["weak_gain_vs_random"] = res["bmsfed"]["weak"] - res["random"]["weak"]
    out["weak_gain_vs_divfl"] = res["bmsfed"]["weak"] - res["divfl"]["weak"]
    out["accuracy_gain_vs_random"] = res["bmsfed"]["accuracy"] - res["random"]["accuracy"]
    # This seed's verdict (``target_met_per_seed`` once aggregated); ``_finish`` judges the means.
    out["target_met"] = target_met(out)
    if curves is not None and run.plots_dir is not None:
        plot_compare(curves, run.plots_dir / f"bmsfed_seed{run.seed}.png")
    return out


def target_met(out: Mapping[str, Any]) -> bool:
    """Weak modality ≥ random's + 3 pp and ≥ DivFL's, overall accuracy ≥ random's."""
    weak = out["weak_modality_accuracy_bmsfed"]
    return bool(
        weak >= out["weak_modality_accuracy_random"] + 0.03
        and weak >= out["weak_modality_accuracy_divfl"]
        and out["accuracy_bmsfed"] >= out["accuracy_random"]
    )


def _finish(out: dict[str, Any]) -> None:
    out["target_met"] = target_met(out)
    # Seeds the settings were chosen on: a verdict over any of them is not a held-out test.
    out["seeds_in_tuning_set"] = [s for s in out["seeds"] if s in TUNING_SEEDS]
    out["held_out"] = not out["seeds_in_tuning_set"]


BENCHMARK = Benchmark(
    "bmsfed",
    _run_seed,
    setup=lambda run: load_central("av-digits", progress=run.progress),
    finish=_finish,
    headline=(
        *(f"accuracy_{a}" for a in ARMS),
        *(f"weak_modality_accuracy_{a}" for a in ARMS),
        "weak_gain_vs_random",
        "weak_gain_vs_divfl",
        "accuracy_gain_vs_random",
        "target_met",
        "held_out",
    ),
    protocol="3",
    draws_plots=True,
)


# -- bmsfed-tuning ----------------------------------------------------------------------------
TUNING_LEARNING_RATES = (0.01, 0.05)
CHIS = (1.2, 2.0)
ME_WEIGHTS = (0.02, 0.2, 2.0)
PAPER_ME_WEIGHT = 2.0
# Every cell of the grid: (lr, χ, λ).
GRID: tuple[tuple[float, float, float], ...] = tuple(
    itertools.product(TUNING_LEARNING_RATES, CHIS, ME_WEIGHTS)
)
TUNING_BENCH_SEEDS = (0, 1, 2, 3, 4)


def cell_name(lr: float, chi: float, me_weight: float) -> str:
    """``lr0.01_chi1.2_me2.0``: a grid cell's key infix."""
    return f"lr{lr}_chi{chi}_me{me_weight}"


def _tuning_seed(run: SeedRun) -> dict[str, Any]:
    data, rounds, clients, k, epochs = _setting(run)
    out: dict[str, Any] = {"rounds": rounds, "clients": clients, "clients_per_round": k}
    out["weak_modality"] = WEAK
    for lr in TUNING_LEARNING_RATES:
        group = f"lr{lr}"
        # The baseline first: the harness compares each arm's budget with it.
        base = train_arm(
            run, f"random_lr{lr}", group, data, [AllClientsFirstRound(k)],
            rounds=rounds, k=k, lr=lr, epochs=epochs, curves=None,
        )  # fmt: skip
        out[f"accuracy_random_lr{lr}"] = base["accuracy"]
        out[f"weak_modality_accuracy_random_lr{lr}"] = base["weak"]
        for cell_lr, chi, me_weight in GRID:
            if cell_lr != lr:
                continue
            cell = cell_name(lr, chi, me_weight)
            techniques: list[Technique] = [BMSFed(clients_per_round=k, chi=chi, me_weight=me_weight)]
            res = train_arm(
                run, cell, group, data, techniques, rounds=rounds, k=k, lr=lr, epochs=epochs, curves=None
            )
            out[f"accuracy_{cell}"] = res["accuracy"]
            out[f"weak_modality_accuracy_{cell}"] = res["weak"]
            out[f"weak_gain_{cell}"] = res["weak"] - base["weak"]
            out[f"accuracy_gain_{cell}"] = res["accuracy"] - base["accuracy"]
    return out


def choose(means: dict[str, Any]) -> tuple[float, float, float]:
    """The protocol's choice rule over the seed means of ``weak_gain_*`` / ``accuracy_gain_*``."""

    def preference(cell: tuple[float, float, float]) -> tuple[float, float]:
        _, chi, me_weight = cell
        return (1.0 if me_weight == PAPER_ME_WEIGHT else 0.0, -chi)

    name = {cell: cell_name(*cell) for cell in GRID}
    ok = [c for c in GRID if means[f"accuracy_gain_{name[c]}"] >= 0.0]
    if ok:
        return max(ok, key=lambda c: (means[f"weak_gain_{name[c]}"], *preference(c)))
    return max(GRID, key=lambda c: (means[f"accuracy_gain_{name[c]}"], *preference(c)))


def _tuning_finish(out: dict[str, Any]) -> None:
    lr, chi, me_weight = choose(out)
    out["chosen"] = cell_name(lr, chi, me_weight)
    out["chosen_lr"], out["chosen_chi"], out["chosen_me_weight"] = lr, chi, me_weight
    out["seeds_outside_tuning_set"] = [s for s in out["seeds"] if s not in TUNING_BENCH_SEEDS]


def _tuning_headline() -> tuple[str, ...]:
    keys: list[str] = []
    for cell in GRID:
        name = cell_name(*cell)
        keys += [f"weak_gain_{name}", f"accuracy_gain_{name}"]
    return (*keys, "chosen")


TUNING = Benchmark(
    "bmsfed-tuning",
    _tuning_seed,
    setup=lambda run: load_central("av-digits", progress=run.progress),
    finish=_tuning_finish,
    quick_seeds=TUNING_BENCH_SEEDS,
    full_seeds=TUNING_BENCH_SEEDS,
    headline=_tuning_headline(),
    protocol="1",
)
