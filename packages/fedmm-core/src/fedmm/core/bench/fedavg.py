"""FedAvg on real multimodal data: the multimodal model against unimodal FedAvg models.

Protocol (both benchmarks; protocol "2", the first under the seed harness):

* **Data.** ``fedavg-av-digits``: av-digits (fixed data seed), 20 clients, Dirichlet α = 0.5,
  10 sampled per round. ``fedavg-hapt``: UCI HAPT windows, one client per training subject
  (21, natural split), every client every round.
* **Arms.** ``multimodal`` (both modalities, late fusion: concat with an image MLP + audio 1-D
  conv on av-digits, attention over two 1-D convs on hapt) and one **unimodal** FedAvg model per
  modality, each trained on that modality alone: separate models, not masked inputs.
* **Budget.** Every arm: the same clients, partition, rounds, first round and optimiser
  (SGD lr 0.05, momentum 0.9, batch 32; 5 local epochs on av-digits, 1 on hapt), so the same
  local steps (the harness checks: ``unequal_budget``; a unimodal model's FLOPs are lower by
  design and exempt).
* **Rounds.** av-digits 50 (quick) / 150 (full); hapt 20 / 200; smoke 2.
* **Seeds.** quick 0, 1, 2; full 0–4. The seed re-draws the partition (av-digits), client
  sampling, initial weights and data order.
* **Metric.** Test accuracy and macro-F1 after the last round (no smoothing).
* **Target.** av-digits: the multimodal model beats both unimodal ones on the seed mean
  (``multimodal_beats_both``, and per seed as ``multimodal_beats_both_per_seed``). hapt: none;
  FedMultimodal's published UCI-HAR FedAvg F1 (0.777) is shown as a reference from a different
  protocol.
"""

from __future__ import annotations

from typing import Any

import torch

from fedmm.core.data.registry import federate, load_central, restrict_modalities
from fedmm.core.data.types import CentralDataset
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.federation import Federation
from fedmm.core.models.model import late_fusion
from fedmm.core.protocol import FedAvg


def _train(
    run: SeedRun,
    arm: str,
    central: CentralDataset,
    *,
    modalities: tuple[str, ...] | None,
    rounds: int,
    fusion: str,
    encoders: dict[str, str],
    clients: int | None,
    partition: str,
    strategy: dict[str, Any],
) -> dict[str, float]:
    ds = restrict_modalities(central, modalities) if modalities else central
    data = federate(ds, clients=clients, partition=partition, alpha=0.5, seed=run.seed)  # type: ignore[arg-type]
    torch.manual_seed(run.seed)
    encoders = {m: e for m, e in encoders.items() if m in data.modality_names}
    model = late_fusion(data.modalities, data.num_classes, fusion=fusion, encoders=encoders)
    fed = Federation(model, data, FedAvg(**strategy), seed=run.seed, eval_every=rounds)
    history = fed.run(rounds, progress=False)
    # A unimodal model is smaller by design: its lower FLOPs are not an unfair budget.
    run.arm(arm, history, claims=("flops",) if modalities else ())
    last = history.rounds[-1]
    return {"accuracy": float(last["accuracy"]), "f1_macro": float(last["f1_macro"])}


def _av_digits_seed(run: SeedRun) -> dict[str, Any]:
    central = run.shared
    rounds = run.pick(smoke=2, quick=50, full=150)
    common: dict[str, Any] = dict(
        rounds=rounds,
        fusion="concat",
        # 8x8 digit images are 64 pixels: an MLP learns them faster than the default CNN.
        encoders={"image": "mlp", "audio": "conv1d"},
        clients=20,
        partition="dirichlet",
        strategy=dict(clients_per_round=10, local_epochs=5, batch_size=32, lr=0.05, momentum=0.9),
    )
    multi = _train(run, "multimodal", central, modalities=None, **common)
    audio = _train(run, "audio_only", central, modalities=("audio",), **common)
    image = _train(run, "image_only", central, modalities=("image",), **common)
    return {
        "rounds": rounds,
        "clients": 20,
        "alpha": 0.5,
        "accuracy_multimodal": multi["accuracy"],
        "accuracy_audio_only": audio["accuracy"],
        "accuracy_image_only": image["accuracy"],
        "f1_multimodal": multi["f1_macro"],
        "multimodal_beats_both": multi["accuracy"] > max(audio["accuracy"], image["accuracy"]),
    }


def _av_digits_finish(out: dict[str, Any]) -> None:
    # The target on the means; the per-seed verdicts stay beside it (``*_per_seed``).
    out["multimodal_beats_both"] = bool(
        out["accuracy_multimodal"] > max(out["accuracy_audio_only"], out["accuracy_image_only"])
    )


def _hapt_seed(run: SeedRun) -> dict[str, Any]:
    central = run.shared
    rounds = run.pick(smoke=2, quick=20, full=200)
    common: dict[str, Any] = dict(
        rounds=rounds,
        fusion="attention",
        encoders={},
        clients=None,
        partition="natural",
        strategy=dict(local_epochs=1, batch_size=32, lr=0.05, momentum=0.9),
    )
    multi = _train(run, "multimodal", central, modalities=None, **common)
    acc = _train(run, "acc_only", central, modalities=("acc",), **common)
    gyro = _train(run, "gyro_only", central, modalities=("gyro",), **common)
    return {
        "rounds": rounds,
        "clients": len(set(central.train_groups.tolist())) if central.train_groups is not None else None,
        "accuracy_multimodal": multi["accuracy"],
        "f1_multimodal": multi["f1_macro"],
        "accuracy_acc_only": acc["accuracy"],
        "accuracy_gyro_only": gyro["accuracy"],
        "f1_acc_only": acc["f1_macro"],
        "f1_gyro_only": gyro["f1_macro"],
        "reference_fedmultimodal_f1_uci_har": 0.777,
    }


AV_DIGITS = Benchmark(
    "fedavg-av-digits",
    _av_digits_seed,
    setup=lambda run: load_central("av-digits", progress=run.progress),
    finish=_av_digits_finish,
    headline=(
        "accuracy_multimodal",
        "accuracy_audio_only",
        "accuracy_image_only",
        "f1_multimodal",
        "multimodal_beats_both",
    ),
    protocol="2",
)

HAPT = Benchmark(
    "fedavg-hapt",
    _hapt_seed,
    setup=lambda run: load_central("hapt", progress=run.progress),
    headline=(
        "accuracy_multimodal",
        "f1_multimodal",
        "accuracy_acc_only",
        "accuracy_gyro_only",
        "f1_acc_only",
        "f1_gyro_only",
    ),
    protocol="2",
)
