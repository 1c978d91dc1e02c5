"""engines: the same 100-client FedAvg job in-process and on Flower's engines.

Protocol (protocol "2", the first under the seed harness):

* **Job.** hapt (real smartphone accelerometer + gyroscope windows), 100 clients (Dirichlet
  α = 0.5), 20 sampled per round, SGD lr 0.05 momentum 0.9, batch 32, one local epoch; 5 rounds
  (quick), 20 (full), 1 (smoke). The seed is the job's run seed.
* **Sides.** The in-process engine and Flower's simulation engine (Ray actors, one virtual
  SuperNode per client), timed end to end (start-up included: it is what a user waits for),
  interleaved with :func:`~fedmm.core.experiment.paired_timing` (one untimed warm-up pair, then
  5 pairs in alternating order; smoke: no warm-up, 1 pair). ``speedup_vs_flower`` is the median
  per-pair ratio Flower ÷ in-process, with its min and max. The process's one-time torch imports
  are paid before either side is timed.
* **Deployment.** Flower's deployment engine on loopback (a SuperLink and real SuperNode
  processes), the same job scaled to 10 SuperNodes (5 per round): one run per seed next to an
  in-process run of the same 10-client job (a deployment run takes minutes, so one pair per seed;
  the spread comes from the seeds). Not in smoke mode (the deployment tests exercise it).
* **Seeds.** quick 0, 1, 2; full 0, 1, 2 (a full seed times the three engines for about 40 minutes on
  2 cores, the deployment engine most of it: three is what fits a run).
* **Metrics agree.** ``max_abs_metric_diff``: the largest per-round difference in accuracy, loss
  and train loss between the engines (must be float noise).
* **Targets.** ``speedup_vs_flower`` ≥ 5 on the quick run's seed mean; ``max_abs_metric_diff``
  ≤ 1e-4.
"""

from __future__ import annotations

import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedmm.core.config import RunConfig, parse_config
from fedmm.core.experiment import Benchmark, SeedRun, paired_timing
from fedmm.core.federation import Federation, History
from fedmm.core.runner import build_dataset, build_federation, read_run

METRICS = ("accuracy", "loss", "train_loss")
CLIENTS = 100
PER_ROUND = 20
# The deployment engine starts one OS process per SuperNode (and one per message it serves):
# 100 of them do not fit a 2-core machine, so its round time is measured on 10.
DEPLOYMENT_CLIENTS = 10


def job(rounds: int, clients: int = CLIENTS, per_round: int = PER_ROUND, seed: int = 0) -> RunConfig:
    """The benchmark's FedAvg job as a run config (the deployment engine reads it from a file)."""
    return parse_config(
        {
            "run": {"name": "engines", "rounds": rounds, "seed": seed, "threads": 1},
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


def _deployment(rounds: int, seed: int) -> dict[str, Any]:
    """The same job, scaled to DEPLOYMENT_CLIENTS real SuperNode processes on loopback."""
    from fedmm.core.flower.local import run_deployment

    cfg = job(rounds, clients=DEPLOYMENT_CLIENTS, per_round=DEPLOYMENT_CLIENTS // 2, seed=seed)
    t0 = time.perf_counter()
    inproc = build_federation(cfg).run(rounds, progress=False)
    inproc_seconds = time.perf_counter() - t0
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
        "deployment_inprocess_seconds": inproc_seconds,
        "deployment_speedup": timing["seconds"] / inproc_seconds,
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


def _seed(run: SeedRun) -> dict[str, Any]:
    _warm_up()
    rounds = run.pick(smoke=1, quick=5, full=20)
    cfg = job(rounds, seed=run.seed)
    data = build_dataset(cfg)
    last: dict[str, tuple[History, list[float]]] = {}

    def side(name: str, **kwargs: Any) -> Any:
        def go() -> float:
            history, seconds, per_round = _timed(build_federation(cfg, data), rounds, **kwargs)
            last[name] = (history, per_round)
            return seconds

        return go

    timing = paired_timing(
        side("flower", engine="flower"),
        side("inprocess"),
        pairs=run.pick(smoke=1, quick=5, full=5),
        warmup=run.pick(smoke=0, quick=1, full=1),
    )
    inproc, inproc_rounds = last["inprocess"]
    flower, flower_rounds = last["flower"]
    result: dict[str, Any] = {
        "dataset": "hapt",
        "clients": CLIENTS,
        "clients_per_round": PER_ROUND,
        "rounds": rounds,
        "pairs": timing["pairs"],
        "inprocess_seconds": statistics.median(timing["b_seconds"]),
        "flower_seconds": statistics.median(timing["a_seconds"]),
        "speedup_vs_flower": timing["ratio"],
        "speedup_vs_flower_min": timing["ratio_min"],
        "speedup_vs_flower_max": timing["ratio_max"],
        "inprocess_round_seconds": sum(inproc_rounds) / max(1, len(inproc_rounds)),
        "flower_round_seconds": sum(flower_rounds) / max(1, len(flower_rounds)),
        "max_abs_metric_diff": max_metric_diff(inproc, flower),
        "final_accuracy_inprocess": inproc.last("accuracy"),
        "final_accuracy_flower": flower.last("accuracy"),
        "bytes_up_inprocess": inproc.ledger.totals()["bytes_up"],
        "bytes_up_flower": flower.ledger.totals()["bytes_up"],
    }
    if not run.smoke:
        result.update(_deployment(rounds, run.seed))
    return result


def _finish(out: dict[str, Any]) -> None:
    out["target_speedup_met"] = bool(out["speedup_vs_flower"] >= 5.0)
    diff = out.get("max_abs_metric_diff")
    out["target_metrics_met"] = bool(diff is not None and diff <= 1e-4)


ENGINES = Benchmark(
    "engines",
    _seed,
    full_seeds=(0, 1, 2),
    finish=_finish,
    headline=(
        "speedup_vs_flower",
        "speedup_vs_flower_min",
        "speedup_vs_flower_max",
        "inprocess_seconds",
        "flower_seconds",
        "inprocess_round_seconds",
        "flower_round_seconds",
        "max_abs_metric_diff",
        "deployment_round_seconds",
        "deployment_speedup",
    ),
    protocol="2",
)
