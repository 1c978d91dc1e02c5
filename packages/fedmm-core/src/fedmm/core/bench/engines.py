"""engines: the same 100-client FedAvg job in-process and on Flower's engines.

One run of each on hapt (real smartphone accelerometer + gyroscope windows; 100 clients,
Dirichlet β=0.5, 20 sampled per round, SGD with momentum): the
in-process engine, Flower's simulation engine (Ray actors, one virtual SuperNode per client), and
— unless ``deployment=False`` — Flower's deployment engine on loopback (a SuperLink and real
SuperNode processes). Reported: end-to-end seconds of each (start-up included: it is what a user
waits for), seconds per round after the first, the speed-up of in-process over Flower's
simulation engine, and the largest difference between the engines' per-round metrics (accuracy,
loss, train loss), which must be float noise.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedmm.core.config import RunConfig, parse_config
from fedmm.core.federation import Federation, History
from fedmm.core.runner import build_dataset, build_federation, read_run

METRICS = ("accuracy", "loss", "train_loss")
CLIENTS = 100
PER_ROUND = 20
# The deployment engine starts one OS process per SuperNode (and one per message it serves):
# 100 of them do not fit a 2-core machine, so its round time is measured on 10.
DEPLOYMENT_CLIENTS = 10


def job(rounds: int, clients: int = CLIENTS, per_round: int = PER_ROUND) -> RunConfig:
    """The benchmark's FedAvg job as a run config (the deployment engine reads it from a file)."""
    return parse_config(
        {
            "run": {"name": "engines", "rounds": rounds, "seed": 0, "threads": 1},
            "data": {"name": "hapt", "clients": clients, "partition": "dirichlet", "alpha": 0.5},
            "strategy": {"clients_per_round": per_round, "lr": 0.05, "momentum": 0.9, "batch_size": 32},
        }
    )


def _timed(fed: Federation, rounds: int, **kwargs: Any) -> tuple[History, float, list[float]]:
    stamps: list[float] = []
    start = time.perf_counter()
    history = fed.run(rounds, progress=False, on_round=lambda _: stamps.append(time.perf_counter()), **kwargs)
    total = time.perf_counter() - start
    return history, total, [b - a for a, b in itertools.pairwise(stamps)]


def max_metric_diff(a: History, b: History) -> float:
    """Largest |a - b| over the per-round metrics both runs report."""
    if len(a.rounds) != len(b.rounds):
        return float("inf")
    diffs = [
        abs(float(x[k]) - float(y[k]))
        for x, y in zip(a.rounds, b.rounds, strict=True)
        for k in METRICS
        if k in x and k in y
    ]
    return max(diffs) if diffs else float("inf")


def _deployment(rounds: int) -> dict[str, Any]:
    """The same job, scaled to DEPLOYMENT_CLIENTS real SuperNode processes on loopback."""
    from fedmm.core.flower.local import run_deployment

    cfg = job(rounds, clients=DEPLOYMENT_CLIENTS, per_round=DEPLOYMENT_CLIENTS // 2)
    inproc = build_federation(cfg).run(rounds, progress=False)
    with tempfile.TemporaryDirectory(prefix="fedmm-engines-") as tmp:
        path = Path(tmp) / "job.toml"
        path.write_text(_to_toml(cfg))
        timing = run_deployment(path, Path(tmp) / "run", nodes=DEPLOYMENT_CLIENTS, workdir=Path(tmp) / "flwr")
        rows, _ = read_run(Path(tmp) / "run")
    seconds = [float(r["train_seconds"]) for r in rows]
    return {
        "deployment_clients": DEPLOYMENT_CLIENTS,
        "deployment_clients_per_round": DEPLOYMENT_CLIENTS // 2,
        "deployment_startup_seconds": timing["startup_seconds"],
        "deployment_seconds": timing["seconds"],
        # A round's client exchange (train + upload), after the first round's cold start.
        "deployment_round_seconds": sum(seconds[1:]) / max(1, len(seconds) - 1),
        "deployment_first_round_seconds": seconds[0],
        "deployment_max_abs_metric_diff": max_metric_diff(inproc, History(rows)),
    }


def _to_toml(cfg: RunConfig) -> str:
    lines: list[str] = []
    for section, values in cfg.model_dump(mode="json", exclude_none=True).items():
        if not isinstance(values, dict):
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
    return "\n".join(lines) + "\n"


def _warm_up() -> None:
    """Pay this process's one-time imports before timing either engine: the first optimizer
    imports torch's compiler stack (seconds), and whichever engine ran first would be charged
    for it. Flower's Ray actors and ClientApp processes still pay their own: that is their cost."""
    param = torch.nn.Parameter(torch.zeros(1))
    torch.optim.SGD([param], lr=0.1).step()


def run(quick: bool = False, deployment: bool = True) -> dict[str, Any]:
    torch.set_num_threads(1)
    _warm_up()
    rounds = 5 if quick else 20
    cfg = job(rounds)
    data = build_dataset(cfg)
    inproc, inproc_s, inproc_rounds = _timed(build_federation(cfg, data), rounds)
    flower, flower_s, flower_rounds = _timed(build_federation(cfg, data), rounds, engine="flower")
    result: dict[str, Any] = {
        "benchmark": "engines",
        "quick": quick,
        "dataset": "hapt",
        "clients": CLIENTS,
        "clients_per_round": PER_ROUND,
        "rounds": rounds,
        "inprocess_seconds": inproc_s,
        "flower_seconds": flower_s,
        "speedup_vs_flower": flower_s / inproc_s,
        "inprocess_round_seconds": sum(inproc_rounds) / max(1, len(inproc_rounds)),
        "flower_round_seconds": sum(flower_rounds) / max(1, len(flower_rounds)),
        "max_abs_metric_diff": max_metric_diff(inproc, flower),
        "final_accuracy_inprocess": inproc.last("accuracy"),
        "final_accuracy_flower": flower.last("accuracy"),
        "bytes_up_inprocess": inproc.ledger.totals()["bytes_up"],
        "bytes_up_flower": flower.ledger.totals()["bytes_up"],
    }
    if deployment:
        result.update(_deployment(rounds))
    return result
