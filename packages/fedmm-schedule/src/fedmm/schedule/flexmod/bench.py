"""``fedmm bench flexmod``: FlexMod vs Entire Update vs Partial Update under one compute budget.

FlexMod (Bian, Wang, Xu, arXiv 2408.06549) claims faster convergence than Entire and Partial
Update at comparable final accuracy. Each arm gives every client the same per-round budget in
FLOPs (``BUDGET`` × what Entire Update's ``local_epochs`` passes cost); Entire Update spends it on
full-modality steps, Partial Update on one random combination per client and round, FlexMod on
its allocation. All arms start from the same weights, data and seed; every client takes part
every round (the paper's setting).

* ``final_accuracy_*``: mean test accuracy of the last ``SMOOTH`` rounds.
* ``time_to_target_*``: cumulative client **training FLOPs** (core's ledger, counted on the real
  steps) until test accuracy first reaches 95 % of Entire Update's final accuracy (``null`` if
  never); ``time_to_target_ratio`` = FlexMod ÷ Entire. Seconds of client training are reported
  alongside (``seconds_to_target_*``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedmm.core.data.registry import federate, load_central
from fedmm.core.data.types import FederatedDataset
from fedmm.core.federation import Federation, History
from fedmm.core.models.model import late_fusion
from fedmm.core.plots import plot_compare
from fedmm.core.protocol import FedAvg, Technique
from fedmm.schedule.flexmod.technique import EntireUpdate, FlexMod, PartialUpdate

SMOOTH = 3
TARGET = 0.95
BUDGET = 1.0


def _to_target(history: History, target: float) -> tuple[float | None, float | None]:
    flops = seconds = 0.0
    per_round = history.ledger.per_round()
    for r in history.rounds:
        tot = per_round.get(r["round"], {})
        flops += float(tot.get("flops", 0.0))
        seconds += float(tot.get("seconds", 0.0))
        if r.get("accuracy", -1.0) >= target:
            return flops, seconds
    return None, None


def compare(
    data: FederatedDataset,
    *,
    rounds: int,
    encoders: dict[str, str],
    strategy: dict[str, Any],
    budget: float = BUDGET,
    seed: int = 0,
    flexmod: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    torch.manual_seed(seed)
    model = late_fusion(data.modalities, data.num_classes, fusion="concat", encoders=encoders)
    arms: dict[str, Technique] = {
        "entire": EntireUpdate(budget=budget),
        "partial": PartialUpdate(budget=budget, seed=seed),
        "flexmod": FlexMod(budget=budget, seed=seed, **(flexmod or {})),
    }
    histories: dict[str, History] = {}
    out: dict[str, Any] = {}
    for name, tech in arms.items():
        t0 = time.perf_counter()
        fed = Federation(copy.deepcopy(model), data, FedAvg([tech], **strategy), seed=seed, eval_every=1)
        histories[name] = fed.run(rounds, progress=False)
        out[f"seconds_{name}"] = time.perf_counter() - t0
        accs = [r["accuracy"] for r in histories[name].rounds]
        out[f"final_accuracy_{name}"] = float(np.mean(accs[-SMOOTH:]))
        out[f"total_flops_{name}"] = float(histories[name].ledger.totals()["flops"])
    target = TARGET * out["final_accuracy_entire"]
    out["target_accuracy"] = target
    for name, history in histories.items():
        flops, secs = _to_target(history, target)
        out[f"time_to_target_{name}"] = flops
        out[f"seconds_to_target_{name}"] = secs
    fm, en = out["time_to_target_flexmod"], out["time_to_target_entire"]
    out["time_to_target_ratio"] = None if fm is None or en is None else fm / en
    out["final_accuracy_gap_pp"] = 100 * (out["final_accuracy_entire"] - out["final_accuracy_flexmod"])
    betas = [r["flexmod/beta"] for r in histories["flexmod"].rounds if "flexmod/beta" in r]
    out["beta_mean"] = float(np.mean(betas)) if betas else None
    last = histories["flexmod"].rounds[-1]
    out["iterations_last_round"] = {
        k.split("/", 2)[2]: v for k, v in last.items() if k.startswith("flexmod/iterations/")
    }
    out["importance_last_round"] = {
        k.split("/", 2)[2]: v for k, v in last.items() if k.startswith("flexmod/importance/")
    }
    flops_by: dict[str, int] = {}
    for rec in histories["flexmod"].ledger.records:
        for k, v in rec.flops_by_combination.items():
            flops_by[k] = flops_by.get(k, 0) + v
    out["flops_by_combination_flexmod"] = flops_by
    return out, {name: h.rounds for name, h in histories.items()}


def _suffixed(result: dict[str, Any], suffix: str) -> dict[str, Any]:
    return {f"{k}{suffix}": v for k, v in result.items()}


def run(quick: bool = False, progress: bool = False, plots_dir: str | None = None) -> dict[str, Any]:
    """av-digits and hapt; quick: 30 / 20 rounds, full: 80 / 60."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "flexmod",
        "quick": quick,
        "budget": BUDGET,
        "target": TARGET,
        "time_unit": "cumulative client training FLOPs (ledger)",
    }
    av = load_central("av-digits", progress=progress)
    data = federate(av, clients=10, partition="dirichlet", alpha=0.5, validation_fraction=0.1, seed=0)
    strategy = {"local_epochs": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.9}
    res, curves = compare(
        data, rounds=30 if quick else 80, encoders={"image": "mlp", "audio": "conv1d"}, strategy=strategy
    )
    out.update(res)
    out["target_met"] = bool(
        res["time_to_target_ratio"] is not None
        and res["time_to_target_ratio"] <= 0.7
        and res["final_accuracy_gap_pp"] <= 1.0
    )
    if plots_dir:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        plot_compare(curves, Path(plots_dir) / "flexmod_av-digits.png")
    hapt = load_central("hapt", progress=progress)
    data = federate(hapt, clients=21, partition="natural", validation_fraction=0.1, seed=0)
    res, curves = compare(
        data, rounds=20 if quick else 60, encoders={"acc": "conv1d", "gyro": "conv1d"}, strategy=strategy
    )
    out.update(_suffixed(res, "_hapt"))
    if plots_dir:
        plot_compare(curves, Path(plots_dir) / "flexmod_hapt.png")
    out["seconds"] = time.perf_counter() - start
    return out
