"""``fedmm bench layerwise``: end-to-end FedMML vs LW-FedMML vs Prog-FedMML, measured on one job.

Reference: Tun et al. (arXiv 2407.15426) report LW-FedMML using up to 2.7x less client memory,
2.4x fewer FLOPs and 2.3x less communication than end-to-end FedMML at competitive accuracy.

Setting (scaled to a CPU): av-digits (image + audio, 10 classes), ``CLIENTS`` clients, Dirichlet
label skew β, every client every round, two transformer towers of ``LAYERS`` layers (core's
``transformer`` encoder: the image split into 8 tokens, the audio's 80 log-mel frames as tokens),
concat fusion, AdamW (lr 5e-3, 2 local epochs). LW and Prog grow one layer per stage over
``LAYERS`` stages; E2E trains the full model for the same number of rounds. All three start from
the same initial weights.

The resource keys are ratios of per-client per-round means over the whole run, all from core's
ledger: peak tensor memory of a local training step (weights touched, saved activations,
gradients, optimiser state), FLOPs counted on the real steps, and bytes down + up that crossed.
The metric is supervised test accuracy of the global model (``metric_*``, mean of the last 3
rounds). Cross-modal retrieval is not measured here: av-digits pairs an image and a recording
only by their digit, so there is no instance-level match to retrieve.
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
from fedmm.core.models.model import MultimodalModel, late_fusion
from fedmm.core.plots import plot_compare
from fedmm.core.protocol import FedAvg
from fedmm.layerwise.technique import LayerWise

CLIENTS = 10
LAYERS = 4
EMBED = 32
SMOOTH = 3
LOCAL_EPOCHS = 2
LR = 5e-3


def build_model(data: FederatedDataset, layers: int = LAYERS, seed: int = 0) -> MultimodalModel:
    """Two transformer towers of ``layers`` layers with a projection head each, concat fusion."""
    torch.manual_seed(seed)
    opts = {"layers": layers, "heads": 2, "ff_dim": 2 * EMBED, "projection": EMBED}
    return late_fusion(
        data.modalities,
        data.num_classes,
        embed_dim=EMBED,
        hidden=EMBED,
        encoders={m.name: "transformer" for m in data.modalities},
        encoder_options={"image": {**opts, "tokens": 8}, "audio": opts},
    )


def _per_client_round(history: History) -> dict[str, float]:
    recs = history.ledger.records
    return {
        "peak_bytes": float(np.mean([r.peak_bytes for r in recs])),
        "flops": float(np.mean([r.flops for r in recs])),
        "bytes": float(np.mean([r.bytes_down + r.bytes_up for r in recs])),
        "bytes_down": float(np.mean([r.bytes_down for r in recs])),
        "bytes_up": float(np.mean([r.bytes_up for r in recs])),
        "seconds": float(np.mean([r.seconds for r in recs])),
    }


def _run_arm(
    model: MultimodalModel,
    data: FederatedDataset,
    mode: str,
    rounds_per_stage: int,
    local_epochs: int,
    seed: int,
    lr: float,
) -> tuple[History, MultimodalModel]:
    strategy = FedAvg(
        [LayerWise(mode=mode, rounds_per_stage=rounds_per_stage)],  # type: ignore[arg-type]
        clients_per_round=None,
        local_epochs=local_epochs,
        batch_size=32,
        optimizer="adamw",
        lr=lr,
    )
    fed = Federation(copy.deepcopy(model), data, strategy, seed=seed, eval_every=1)
    history = fed.run(rounds_per_stage * LAYERS, progress=False)
    return history, fed.model  # type: ignore[return-value]


def compare(
    data: FederatedDataset,
    *,
    rounds_per_stage: int,
    local_epochs: int = LOCAL_EPOCHS,
    lr: float = LR,
    seed: int = 0,
    modes: tuple[str, ...] = ("e2e", "lw", "prog"),
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """One comparison on ``data``: the JSON keys and each arm's per-round history."""
    model = build_model(data, seed=seed)
    out: dict[str, Any] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    costs: dict[str, dict[str, float]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        history, _ = _run_arm(model, data, mode, rounds_per_stage, local_epochs, seed, lr)
        curves[mode] = history.rounds
        last = [r["accuracy"] for r in history.rounds if "accuracy" in r][-SMOOTH:]
        out[f"metric_{mode}"] = float(np.mean(last))
        out[f"final_accuracy_{mode}"] = float(history.rounds[-1]["accuracy"])
        costs[mode] = _per_client_round(history)
        for key, value in costs[mode].items():
            out[f"{key}_per_client_round_{mode}"] = value
        out[f"total_bytes_{mode}"] = int(
            history.ledger.totals()["bytes_down"] + history.ledger.totals()["bytes_up"]
        )
        out[f"seconds_{mode}"] = time.perf_counter() - t0
    for key, name in (("peak_bytes", "memory"), ("flops", "flops"), ("bytes", "comm")):
        if "e2e" in costs and "lw" in costs:
            out[f"{name}_reduction"] = costs["e2e"][key] / costs["lw"][key]
        if "e2e" in costs and "prog" in costs:
            out[f"{name}_reduction_prog"] = costs["e2e"][key] / costs["prog"][key]
    if "e2e" in costs and "lw" in costs:
        out["metric_gap_lw_pp"] = 100 * (out["metric_e2e"] - out["metric_lw"])
    return out, curves


def run(
    quick: bool = False,
    progress: bool = False,
    plots_dir: str | None = None,
) -> dict[str, Any]:
    """Quick: β = 0.5, 5 rounds per stage. Full: 10 rounds per stage, and the Dirichlet sweep
    β ∈ {0.05, 0.1, 0.5, 1} with a plot."""
    torch.set_num_threads(1)  # small models: one thread per process is fastest on few cores
    start = time.perf_counter()
    central = load_central("av-digits", progress=progress)
    rounds_per_stage = 5 if quick else 10
    data = federate(central, clients=CLIENTS, partition="dirichlet", alpha=0.5, seed=0)
    out: dict[str, Any] = {
        "benchmark": "layerwise-av-digits",
        "quick": quick,
        "metric": "test accuracy (supervised, mean of the last 3 rounds)",
        "clients": CLIENTS,
        "layers_per_tower": LAYERS,
        "stages": LAYERS,
        "rounds_per_stage": rounds_per_stage,
        "rounds": rounds_per_stage * LAYERS,
        "alpha": 0.5,
        "local_epochs": LOCAL_EPOCHS,
        "optimizer": f"adamw lr {LR}",
    }
    result, curves = compare(data, rounds_per_stage=rounds_per_stage)
    out.update(result)
    out["target_met"] = bool(
        out["memory_reduction"] >= 2.7
        and out["flops_reduction"] >= 2.4
        and out["comm_reduction"] >= 2.3
        and out["metric_gap_lw_pp"] <= 3.0
    )
    if plots_dir:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        plot_compare(curves, Path(plots_dir) / "layerwise_av-digits.png")
    if not quick:
        sweep: dict[str, dict[str, float]] = {}
        for beta in (0.05, 0.1, 0.5, 1.0):
            d = federate(central, clients=CLIENTS, partition="dirichlet", alpha=beta, seed=0)
            r, _ = compare(d, rounds_per_stage=rounds_per_stage)
            sweep[str(beta)] = {k: r[k] for k in ("metric_e2e", "metric_lw", "metric_prog")}
        out["dirichlet_sweep"] = sweep
        if plots_dir:
            _plot_sweep(sweep, Path(plots_dir) / "layerwise_dirichlet_sweep.png")
    out["seconds"] = time.perf_counter() - start
    return out


def _plot_sweep(sweep: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = [float(b) for b in sweep]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode, label in (("e2e", "FedMML (end to end)"), ("lw", "LW-FedMML"), ("prog", "Prog-FedMML")):
        ax.plot(betas, [sweep[b][f"metric_{mode}"] for b in sweep], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet β (smaller = more label skew)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
