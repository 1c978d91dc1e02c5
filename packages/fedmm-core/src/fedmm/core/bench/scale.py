"""core-scale: a huge client population in one process.

Protocol (protocol "3": protocol 2 with the in-process engine training each round's clients as
one vectorised batch, its default since issue 21; ``rounds_batched`` says how many rounds did;
and each seed in a fresh Python process, so a seed's RSS figures hold no earlier seed's data.
Protocol 2's files, one client after another in one process, stay beside it):

* **Data.** Synthetic (2 modalities × 16 features, 10 classes, 8 samples per client, fixed data
  seed 0), IID: 10 000 clients (quick), 1 000 000 (full), 2 000 (smoke).
* **Run.** FedAvg, 100 clients sampled per round, 1 local epoch, batch 8, 5 rounds (2 in smoke);
  the seed varies client sampling, initial weights and data order.
* **Seeds.** quick and full 0, 1, 2 (each full seed builds a million clients: three is what fits).
* **Measures.** RSS before the data, the data's own bytes, the peak RSS of the seed's run (the
  process's high-water mark is reset before each seed where Linux allows it, ``peak_reset``),
  seconds per round after the first (the first also measures each step shape once).
* **Target.** A round costs the clients sampled, not the population: ``seconds_per_round`` at
  10⁶ clients within 1.5× of 10⁴ (compare the quick and full records).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fedmm.core.data.registry import federate, load_central
from fedmm.core.experiment import Benchmark, SeedRun
from fedmm.core.federation import Federation
from fedmm.core.measure import current_rss_bytes, peak_rss_bytes
from fedmm.core.models.model import late_fusion
from fedmm.core.protocol import FedAvg

MiB = 2**20


def _reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux ≥ 4.0: ``/proc/self/clear_refs`` ← 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    """VmHWM (resettable) where /proc exists, else ``getrusage``'s process-lifetime peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return peak_rss_bytes()


def measure_scale(clients: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """One run of ``clients`` clients for ``rounds`` rounds; the figures above."""
    samples_per_client = 8
    reset = _reset_peak_rss()
    rss_start = current_rss_bytes()
    t0 = time.perf_counter()
    central = load_central(
        "synthetic",
        num_samples=clients * samples_per_client,
        test_samples=2_000,
        num_classes=10,
        modalities=[("a", 16, 0.8), ("b", 16, 0.4)],
        seed=0,
    )
    data = federate(central, clients=clients, partition="iid", seed=0)
    build_seconds = time.perf_counter() - t0
    data_bytes = (
        data.train.nbytes + data.test.nbytes + data.partition.indices.nbytes + data.partition.offsets.nbytes
    )
    rss_after_data = current_rss_bytes()
    torch.manual_seed(seed)
    model = late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})
    fed = Federation(
        model, data, FedAvg(clients_per_round=100, local_epochs=1, batch_size=8), seed=seed, eval_every=0
    )
    engine = fed.in_process_engine()
    stamps: list[float] = []
    t1 = time.perf_counter()
    history = fed.run(
        rounds, progress=False, on_round=lambda _: stamps.append(time.perf_counter()), engine=engine
    )
    per_round = [b - a for a, b in zip([t1, *stamps[:-1]], stamps, strict=True)]
    peak = _peak_rss()
    return {
        "clients": data.num_clients,
        "clients_per_round": 100,
        "rounds": rounds,
        "samples": len(data.train),
        "data_mib": data_bytes / MiB,
        "rss_start_mib": rss_start / MiB,
        "rss_after_data_mib": rss_after_data / MiB,
        "peak_rss_mib": peak / MiB,
        "peak_rss_minus_data_mib": (peak - data_bytes) / MiB,
        "peak_reset": reset,
        "build_seconds": build_seconds,
        # The first round also measures each new step signature (FLOPs, memory) once.
        "first_round_seconds": per_round[0],
        "seconds_per_round": sum(per_round[1:]) / max(1, len(per_round) - 1),
        "client_states": len(fed.client_states),
        "rounds_batched": engine.rounds_batched,
        "train_loss_first_round": history.rounds[0].get("train_loss"),
        "train_loss_last_round": history.rounds[-1].get("train_loss"),
    }


def _seed(run: SeedRun) -> dict[str, Any]:
    clients = run.pick(smoke=2_000, quick=10_000, full=1_000_000)
    return measure_scale(clients, run.pick(smoke=2, quick=5, full=5), seed=run.seed)


SCALE = Benchmark(
    "core-scale",
    _seed,
    full_seeds=(0, 1, 2),
    isolate_seeds=True,
    headline=("clients", "data_mib", "rss_start_mib", "peak_rss_mib", "seconds_per_round", "rounds_batched"),
    protocol="3",
)
