"""engine-batched: the in-process engine with its clients batched against one by one.

Protocol (protocol "2": protocol 1's measurement, unchanged, of the revised engine that steps only
the clients with a step left; protocol 1's file, of the first engine, stays beside it):

* **Jobs.** ``hapt`` (unsuffixed keys): the ``engines`` benchmark's job — hapt, 100 clients
  (Dirichlet α = 0.5), 20 sampled per round, SGD lr 0.05 momentum 0.9, batch 32, one local epoch,
  late fusion (concat) of two 1-D conv encoders. ``av_digits`` (keys suffixed ``_av_digits``): the
  ``fedavg-av-digits`` multimodal job — av-digits, 20 clients (Dirichlet α = 0.5), 10 per round,
  5 local epochs, batch 32, SGD lr 0.05 momentum 0.9, concat of an image MLP and an audio 1-D conv.
  Both evaluate on the test set every round, as the jobs do.
* **Rounds.** quick 5, full 20, smoke 1; the same rounds, first round and seed on every side.
* **Sides.** ``batched``: the in-process engine with ``batch_clients`` on, torch using every core.
  ``sequential``: the same engine one client after another with the job's ``threads = 1``.
  ``sequential_all_cores``: one after another with every core (a second thread helps a small
  step a little: the fair best of the one-by-one engine).
* **Timing.** Wall time of ``Federation.run`` (model and data built outside the clock), interleaved
  with :func:`~fedmm.core.experiment.paired_timing`: one untimed warm-up pair, then 5 pairs in
  alternating order (smoke: no warm-up, 1 pair), batched against each sequential side.
  ``speedup_vs_sequential`` = the median per-pair ratio sequential ÷ batched, with min and max;
  ``speedup_vs_sequential_all_cores`` likewise. ``train_speedup``: the same ratio over the rounds'
  ``train_seconds`` (the round without its evaluation), from the last timed pair.
* **Agreement.** ``max_abs_metric_diff``: the largest per-round difference in accuracy, loss and
  train loss between the batched and the sequential run. ``rounds_batched``: the rounds the batched
  side really trained batched (must equal ``rounds``).
* **Utilisation.** The batched run's training FLOP/s (the ledger's measured training FLOPs over the
  batched training seconds) ÷ a 2048² float32 matmul's FLOP/s on all cores, measured in the same
  process right before the seed's timings.
* **Seeds.** quick 0, 1, 2; full 0, 1, 2.
* **Targets** (issue 21, on this 2-core CPU): ``speedup_vs_sequential`` ≥ 2 on both jobs (seed
  means) with ``max_abs_metric_diff`` ≤ 1e-4 on both; the utilisation is reported.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

from fedmm.core.bench.engines import job as hapt_job
from fedmm.core.bench.engines import max_metric_diff
from fedmm.core.config import RunConfig, parse_config
from fedmm.core.data.types import FederatedDataset
from fedmm.core.engine import InProcessEngine
from fedmm.core.experiment import Benchmark, SeedRun, paired_timing
from fedmm.core.federation import History
from fedmm.core.runner import build_dataset, build_federation

MATMUL_SIZE = 2048


def av_digits_job(rounds: int, seed: int = 0) -> RunConfig:
    """``fedavg-av-digits``'s multimodal FedAvg job as a run config."""
    return parse_config(
        {
            "run": {"name": "engine-batched", "rounds": rounds, "seed": seed, "threads": 1},
            "data": {"name": "av-digits", "clients": 20, "partition": "dirichlet", "alpha": 0.5},
            "model": {"fusion": "concat", "encoders": {"image": "mlp", "audio": "conv1d"}},
            "strategy": {
                "clients_per_round": 10,
                "local_epochs": 5,
                "batch_size": 32,
                "lr": 0.05,
                "momentum": 0.9,
            },
        }
    )


def matmul_flops_per_second(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """A float32 ``size``² matmul's FLOP/s with torch's current threads (the best of ``repeats``)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def _job(cfg: RunConfig, data: FederatedDataset, rounds: int, run: SeedRun) -> dict[str, Any]:
    all_cores = os.cpu_count() or 1
    last: dict[str, tuple[History, InProcessEngine]] = {}

    def side(name: str, batched: bool, threads: int) -> Any:
        def go() -> float:
            fed = build_federation(cfg, data, progress=False)
            torch.set_num_threads(threads)
            engine = InProcessEngine(
                fed.model, fed.data, fed.strategy.techniques, meter=fed.meter, batch_clients=batched
            )
            t0 = time.perf_counter()
            history = fed.run(rounds, progress=False, engine=engine)
            seconds = time.perf_counter() - t0
            last[name] = (history, engine)
            return seconds

        return go

    pairs = run.pick(smoke=1, quick=5, full=5)
    warmup = run.pick(smoke=0, quick=1, full=1)
    torch.set_num_threads(all_cores)
    matmul = matmul_flops_per_second()
    one = paired_timing(
        side("sequential", False, 1), side("batched", True, all_cores), pairs=pairs, warmup=warmup
    )
    batched, b_engine = last["batched"]
    sequential, _ = last["sequential"]
    every = paired_timing(
        side("sequential_all_cores", False, all_cores),
        side("batched", True, all_cores),
        pairs=pairs,
        warmup=warmup,
    )
    torch.set_num_threads(1)
    train_b = sum(float(r["train_seconds"]) for r in batched.rounds)
    train_s = sum(float(r["train_seconds"]) for r in sequential.rounds)
    records = batched.ledger.records
    flops = sum(c.flops_by_hook.get("train", 0) for c in records)
    train_time = sum(c.seconds_by_hook.get("train", 0.0) for c in records)
    return {
        "rounds": rounds,
        "cores": all_cores,
        "pairs": pairs,
        "batched_seconds": statistics.median(one["b_seconds"]),
        "sequential_seconds": statistics.median(one["a_seconds"]),
        "sequential_all_cores_seconds": statistics.median(every["a_seconds"]),
        "speedup_vs_sequential": one["ratio"],
        "speedup_vs_sequential_min": one["ratio_min"],
        "speedup_vs_sequential_max": one["ratio_max"],
        "speedup_vs_sequential_all_cores": every["ratio"],
        "train_speedup": train_s / train_b if train_b else float("nan"),
        "max_abs_metric_diff": max(
            max_metric_diff(sequential, batched), max_metric_diff(last["sequential_all_cores"][0], batched)
        ),
        "rounds_batched": b_engine.rounds_batched,
        "final_accuracy": batched.last("accuracy"),
        "training_flops_per_second": flops / train_time if train_time else float("nan"),
        "matmul_flops_per_second": matmul,
        "utilisation": (flops / train_time) / matmul if train_time else float("nan"),
    }


def _seed(run: SeedRun) -> dict[str, Any]:
    rounds = run.pick(smoke=1, quick=5, full=20)
    out: dict[str, Any] = {}
    for suffix, cfg in (
        ("", hapt_job(rounds, seed=run.seed)),
        ("_av_digits", av_digits_job(rounds, run.seed)),
    ):
        data = build_dataset(cfg, progress=False)
        for key, value in _job(cfg, data, rounds, run).items():
            out[key + suffix] = value
    return out


def _finish(out: dict[str, Any]) -> None:
    speed = [out.get("speedup_vs_sequential"), out.get("speedup_vs_sequential_av_digits")]
    out["target_speedup_met"] = bool(all(s is not None and s >= 2.0 for s in speed))
    diffs = [out.get("max_abs_metric_diff"), out.get("max_abs_metric_diff_av_digits")]
    out["target_metrics_met"] = bool(all(d is not None and d <= 1e-4 for d in diffs))


ENGINE_BATCHED = Benchmark(
    "engine-batched",
    _seed,
    quick_seeds=(0, 1, 2),
    full_seeds=(0, 1, 2),
    finish=_finish,
    headline=(
        "speedup_vs_sequential",
        "speedup_vs_sequential_all_cores",
        "train_speedup",
        "max_abs_metric_diff",
        "utilisation",
        "speedup_vs_sequential_av_digits",
        "speedup_vs_sequential_all_cores_av_digits",
        "train_speedup_av_digits",
        "max_abs_metric_diff_av_digits",
        "utilisation_av_digits",
    ),
    protocol="2",
)

__all__ = ["ENGINE_BATCHED", "av_digits_job", "matmul_flops_per_second"]
