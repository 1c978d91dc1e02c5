"""FedMultimodal's UCI-HAR protocol, with their published table beside ours.

Protocol "1" (the first run of this benchmark), written before any of its results. It follows
FedMultimodal (Feng et al., KDD 2023; repository ``usc-sail/fed-multimodal``,
``experiment/uci-har``) as read from their code:

* **Data.** ``--data-path DIR``: a ``UCI HAR Dataset`` folder, read by ``uci-har`` with
  ``body_acc`` and ``body_gyro`` (``acc_source="body"``) and each window's channels z-scored by
  their own statistics (``window_norm``). Without it, the same protocol runs on the windows of
  the offline ``hapt`` recordings (the same 21 training and 9 test subjects, 2.56 s windows;
  gravity removed from the accelerometer by a 0.3 Hz Butterworth high-pass, as UCI-HAR did;
  no other filtering), and the JSON says so (``data``). 20 % of each training subject's windows
  form the server's dev set (``validation_split="per_group"``); the test set is the 9 test
  subjects, always with both modalities.
* **Clients.** Each of the 21 training subjects is cut into 5 sub-clients by a Dirichlet over
  labels (``partition="natural_dirichlet"``, at most a fair share per sub-client, at least 5
  samples each): 105 clients, at α = 5.0 and α = 0.1. 10 clients per round, 200 rounds.
* **Arms.** ``fedavg``; ``fedprox`` (μ = 0.01); ``fedopt``: FedMultimodal's FedOpt, which their
  code implements as server SGD with momentum 0.9 and lr 0.025 on the update divided by the
  client lr 0.05, i.e. ``FedAvgM(server_lr=0.5, momentum=0.9)`` (not FedAdam). Each at both α.
  Missing modality: ``fedopt`` at α = 0.1 with ``client_missing_rate`` p ∈ {0.1, 0.3, 0.5} (each
  client lacks each modality for all its samples with probability p; a client left with none is
  dropped). Every arm: the same model, first round, optimiser and local budget.
* **Model.** :func:`fedmm.core.models.har.fedmultimodal_har` (conv + GRU per sensor, 6-head
  attention over all 32 steps, 420 684 parameters).
* **Local training.** 1 epoch, batch 16, SGD lr 0.05, momentum 0.9, weight decay 1e-5,
  gradients clipped to norm 10.
* **Seeds.** quick 0, 1, 2; full 0–4 (tuning seeds; the verdict is a run on seeds 10–14). The
  seed draws the partition, the client schedule, the initial weights, data order and dropout.
  (FedMultimodal fixes the partition and schedule across its 5 runs; re-drawing them is
  stricter.)
* **Metric.** Test macro-F1 at the round with the best dev macro-F1 (the first best wins ties),
  as theirs; accuracy and UAR at that round beside it. Dev is scored every round, the test set
  at each round where dev improves (the same figure as scoring it every round).
  For ``fedopt`` at α = 0.1 (full data), the test-time missing-modality curve of the selected
  model: macro-F1 with each test sample's modalities missing with probability 0–0.9 (a sample
  keeps at least one).
* **Rounds.** full 200; quick 60; smoke 2.
* **Target.** Each of ``f1_fedavg_a5``, ``f1_fedavg_a01``, ``f1_fedopt_a5``, ``f1_fedopt_a01``
  at or above FedMultimodal's published figure (``published_*``: 0.7774, 0.7666, 0.8517,
  0.7980), on the seed means of the full protocol. Published figures exist only for UCI-HAR
  itself; on the hapt windows they are a reference, not a target.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from fedmm.core.algorithms.fedprox import FedProx
from fedmm.core.algorithms.server_optimizers import FedAvgM
from fedmm.core.arrays import GroupedArrays
from fedmm.core.data.registry import federate, load_central
from fedmm.core.data.types import CentralDataset
from fedmm.core.evaluate import evaluate, missing_modality_curve
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.federation import Federation
from fedmm.core.models.har import fedmultimodal_har
from fedmm.core.protocol import FedAvg, Technique

ALPHAS: dict[str, float] = {"a5": 5.0, "a01": 0.1}
ALGORITHMS = ("fedavg", "fedprox", "fedopt")
MISSING_RATES = (0.1, 0.3, 0.5)
TEST_MISSING_RATES = tuple(round(0.1 * i, 1) for i in range(10))
# FedMultimodal's README (UCI-HAR, attention fusion, 200 rounds): macro-F1 / 100.
PUBLISHED: dict[str, float] = {
    "f1_fedavg_a5": 0.7774,
    "f1_fedavg_a01": 0.7666,
    "f1_fedopt_a5": 0.8517,
    "f1_fedopt_a01": 0.7980,
}
LOCAL = dict(
    clients_per_round=10,
    local_epochs=1,
    batch_size=16,
    lr=0.05,
    momentum=0.9,
    weight_decay=1e-5,
    max_grad_norm=10.0,
)


def _setup(run: SeedRun) -> CentralDataset:
    if run.data_path is not None:
        return load_central("uci-har", path=run.data_path, acc_source="body", window_norm=True)
    return load_central("hapt", acc_source="body", window_norm=True, progress=run.progress)


def _strategy(algorithm: str) -> FedAvg:
    techniques: list[Technique] = [FedProx(mu=0.01)] if algorithm == "fedprox" else []
    server = FedAvgM(server_lr=0.5, momentum=0.9) if algorithm == "fedopt" else None
    return FedAvg(techniques, server_optimizer=server, **LOCAL)  # type: ignore[arg-type]


def _train(
    run: SeedRun, arm: str, central: CentralDataset, algorithm: str, alpha: float, missing: float = 0.0
) -> tuple[dict[str, float], Federation, GroupedArrays]:
    """One arm: the test metrics at the best-dev round, the federation and that round's weights."""
    data = federate(
        central,
        clients=None,
        partition="natural_dirichlet",
        subclients=5,
        alpha=alpha,
        min_samples=5,
        validation_fraction=0.2,
        validation_split="per_group",
        client_missing_rate=missing,
        seed=run.seed,
    )
    torch.manual_seed(run.seed)
    model = fedmultimodal_har(data.modalities, data.num_classes)
    # Dev is scored every round; the test set only when dev improves (the round that could be
    # selected), which gives the same figure as scoring both every round at a third of the cost.
    fed = Federation(model, data, _strategy(algorithm), seed=run.seed, eval_every=0)
    dev_set = data.validation
    assert dev_set is not None
    best: dict[str, Any] = {}

    def keep_best(metrics: dict[str, Any]) -> None:
        current = fed.model_with(fed.global_arrays)
        dev = evaluate(current, dev_set, data.num_classes, per_modality=False)["f1_macro"]
        metrics["val_f1_macro"] = dev
        if "dev_f1" not in best or dev > best["dev_f1"]:
            test = evaluate(current, data.test, data.num_classes, per_modality=False)
            best.update(dev_f1=dev, round=int(metrics["round"]), metrics=test)
            best["arrays"] = copy.deepcopy(fed.global_arrays)

    history = fed.run(rounds=run.pick(smoke=2, quick=60, full=200), progress=False, on_round=keep_best)
    failure = history.failure()
    if failure:
        raise RuntimeError(f"fedmultimodal-har arm {arm}: {failure}")
    # Arms are compared within one setting (α, missing rate): there they share data and steps.
    run.arm(arm, history, group=arm.split("_", 1)[1])
    m = best["metrics"]
    out = {
        "f1": float(m["f1_macro"]),
        "accuracy": float(m["accuracy"]),
        "uar": float(m["uar"]),
        "dev_f1": best["dev_f1"],
        "best_round": float(best["round"]),
        "clients": float(data.num_clients),
        "dropped": float(data.metadata.get("clients_dropped_no_modality", 0)),
    }
    return out, fed, best["arrays"]


def _seed(run: SeedRun) -> dict[str, Any]:
    central: CentralDataset = run.shared
    out: dict[str, Any] = {}
    for suffix, alpha in ALPHAS.items():
        for algorithm in ALGORITHMS:
            arm = f"{algorithm}_{suffix}"
            res, fed, arrays = _train(run, arm, central, algorithm, alpha)
            for k in ("f1", "accuracy", "uar", "best_round"):
                out[f"{k}_{arm}"] = res[k]
            out[f"clients_{suffix}"] = res["clients"]
            if arm == "fedopt_a01":
                curve = missing_modality_curve(
                    fed.model_with(arrays),
                    fed.data.test,
                    fed.data.num_classes,
                    TEST_MISSING_RATES,
                    seed=run.seed,
                )
                for rate, metrics in curve.items():
                    out[f"f1_fedopt_a01_testmissing{round(rate * 100)}"] = metrics["f1_macro"]
    for p in MISSING_RATES:
        arm = f"fedopt_a01_missing{round(p * 100)}"
        res, _, _ = _train(run, arm, central, "fedopt", ALPHAS["a01"], missing=p)
        out[f"f1_{arm}"] = res["f1"]
        out[f"accuracy_{arm}"] = res["accuracy"]
        out[f"clients_dropped_{arm}"] = res["dropped"]
    return out


def _finish(out: dict[str, Any]) -> None:
    uci = out.get("data_path") is not None
    out["data"] = "uci-har" if uci else "hapt windows (no --data-path given)"
    out.update({f"published_{k}": v for k, v in PUBLISHED.items()})
    for k, v in PUBLISHED.items():
        if k in out and out[k] is not None:
            out[f"{k}_minus_published"] = float(out[k]) - v
    met = all(out.get(k) is not None and float(out[k]) >= v for k, v in PUBLISHED.items())
    # A target on UCI-HAR only: the hapt windows are other recordings of the same subjects.
    out["target_met"] = bool(met) if uci else None
    out["at_or_above_published"] = bool(met)


FEDMULTIMODAL_HAR = Benchmark(
    "fedmultimodal-har",
    _seed,
    setup=_setup,
    finish=_finish,
    takes_data_path=True,
    headline=(
        "data",
        "f1_fedavg_a5",
        "published_f1_fedavg_a5",
        "f1_fedavg_a01",
        "published_f1_fedavg_a01",
        "f1_fedopt_a5",
        "published_f1_fedopt_a5",
        "f1_fedopt_a01",
        "published_f1_fedopt_a01",
        "f1_fedprox_a5",
        "f1_fedprox_a01",
        "f1_fedopt_a01_missing10",
        "f1_fedopt_a01_missing30",
        "f1_fedopt_a01_missing50",
        "target_met",
    ),
    protocol="1",
)

__all__ = ["FEDMULTIMODAL_HAR", "PUBLISHED"]
