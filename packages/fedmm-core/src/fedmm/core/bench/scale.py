"""core-scale: a huge client population in one process.

``--quick``: 10 000 clients; full: 1 000 000 clients; 100 sampled per round either way. Clients
are index views into one shared sample set, per-client state exists only for clients that have
any, and a round costs the clients sampled, not the population. Reported: RSS before the data,
the data's own bytes, peak RSS, and seconds per round.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fedmm.core.data.registry import federate, load_central
from fedmm.core.federation import Federation
from fedmm.core.measure import current_rss_bytes, peak_rss_bytes
from fedmm.core.models.model import late_fusion
from fedmm.core.protocol import FedAvg

MiB = 2**20


def run(quick: bool = False, clients: int | None = None, rounds: int = 5) -> dict[str, Any]:
    torch.set_num_threads(1)  # small models: one thread per process is fastest on few cores
    clients = clients or (10_000 if quick else 1_000_000)
    samples_per_client = 8
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
    torch.manual_seed(0)
    model = late_fusion(data.modalities, data.num_classes, encoders={"a": "mlp", "b": "mlp"})
    fed = Federation(
        model, data, FedAvg(clients_per_round=100, local_epochs=1, batch_size=8), seed=0, eval_every=0
    )
    round_seconds: list[float] = []

    def tick(_: dict[str, Any]) -> None:
        round_seconds.append(time.perf_counter() - t1)

    t1 = time.perf_counter()
    history = fed.run(rounds, progress=False, on_round=tick)
    per_round = [b - a for a, b in zip([0.0, *round_seconds[:-1]], round_seconds, strict=True)]
    peak = peak_rss_bytes()
    return {
        "benchmark": "core-scale",
        "quick": quick,
        "clients": data.num_clients,
        "clients_per_round": 100,
        "rounds": rounds,
        "samples": len(data.train),
        "data_mib": data_bytes / MiB,
        "rss_start_mib": rss_start / MiB,
        "rss_after_data_mib": rss_after_data / MiB,
        "peak_rss_mib": peak / MiB,
        "peak_rss_minus_data_mib": (peak - data_bytes) / MiB,
        "build_seconds": build_seconds,
        # The first round also measures each new step signature (FLOPs, memory) once.
        "first_round_seconds": per_round[0],
        "seconds_per_round": sum(per_round[1:]) / max(1, len(per_round) - 1),
        "client_states": len(fed.client_states),
        "train_loss_first_round": history.rounds[0].get("train_loss"),
        "train_loss_last_round": history.rounds[-1].get("train_loss"),
    }
