"""core-overhead: the in-process engine against a hand-written PyTorch loop doing the same work.

Protocol (protocol "2", the first under the seed harness):

* **Data.** av-digits (fixed data seed), 20 clients, Dirichlet α = 0.5, 10 sampled per round.
* **Sides.** The engine (``Federation.run``) and a hand-written PyTorch FedAvg loop that replays
  the engine's client selection with the same seeds, model, data order, optimiser (SGD 0.05,
  momentum 0.9, batch 32, 2 local epochs) and FedAvg; it has no hooks, no ledger, no validation
  and no FLOP/memory measurement. Both do identical arithmetic: ``max_abs_weight_diff`` is the
  largest difference between the two final models (must be 0 or float noise).
* **Rounds.** quick 10, full 40, smoke 1.
* **Timing.** Per seed, the two sides run interleaved (:func:`~fedmm.core.experiment.paired_timing`:
  one untimed warm-up pair, then 5 pairs in alternating order; 2 in smoke mode);
  ``overhead_ratio`` is the median of the per-pair ratios engine ÷ hand loop, with its min and
  max. The harness then averages over seeds.
* **Seeds.** quick 0, 1, 2; full 0–4 (partition, selection, weights).
* **Target.** ``overhead_ratio`` ≤ 1.10 on the seed mean.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.core.arrays import get_arrays
from fedmm.core.client import derive_seed
from fedmm.core.data.registry import load as load_dataset
from fedmm.core.data.types import Batch, FederatedDataset
from fedmm.core.experiment import Benchmark, SeedRun, paired_timing
from fedmm.core.federation import CLIENT_SALT, Federation
from fedmm.core.models.model import MultimodalModel, late_fusion
from fedmm.core.protocol import FedAvg


def _raw_loop(
    model: MultimodalModel,
    data: FederatedDataset,
    schedule: list[list[int]],
    seed: int,
    epochs: int,
    bs: int,
    lr: float,
) -> dict[str, np.ndarray]:
    """Plain PyTorch FedAvg over the given per-round client lists."""
    names = data.modality_names
    feats = {m: torch.from_numpy(data.train.features[m]) for m in names}
    present = torch.from_numpy(data.train.present)
    labels = torch.from_numpy(data.train.labels)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for round_, clients in enumerate(schedule, start=1):
        new_states, weights = [], []
        for cid in clients:
            model.load_state_dict(global_state)
            s = derive_seed(seed, round_, cid, CLIENT_SALT)
            torch.random.default_generator.manual_seed(s)
            gen = torch.Generator().manual_seed(s)
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            idx_all = torch.from_numpy(data.partition.of(cid))
            model.train()
            for _ in range(epochs):
                idx_all_shuf = idx_all[torch.randperm(idx_all.shape[0], generator=gen)]
                for start in range(0, idx_all.shape[0], bs):
                    idx = idx_all_shuf[start : start + bs]
                    batch = Batch({m: feats[m][idx] for m in names}, present[idx], labels[idx], names)
                    loss = F.cross_entropy(model(batch).logits, batch.labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            new_states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            weights.append(float(idx_all.shape[0]))
        total = sum(weights)
        global_state = {
            k: sum((w / total) * st[k].double() for st, w in zip(new_states, weights, strict=True)).float()
            for k in global_state
        }
    return {k: v.numpy() for k, v in global_state.items()}


def _seed(run: SeedRun) -> dict[str, Any]:
    seed = run.seed
    rounds = run.pick(smoke=1, quick=10, full=40)
    pairs = run.pick(smoke=2, quick=5, full=5)
    data = load_dataset("av-digits", clients=20, partition="dirichlet", alpha=0.5, seed=seed)
    torch.manual_seed(seed)
    init = late_fusion(data.modalities, data.num_classes)
    epochs, bs, lr = 2, 32, 0.05
    strategy = FedAvg(clients_per_round=10, local_epochs=epochs, batch_size=bs, lr=lr, momentum=0.9)
    probe = Federation(copy.deepcopy(init), data, strategy, seed=seed, eval_every=0)
    schedule = [
        [int(c) for c in strategy.select_clients(probe.context(r)).tolist()] for r in range(1, rounds + 1)
    ]
    last: dict[str, Any] = {}

    def engine() -> float:
        fed = Federation(copy.deepcopy(init), data, strategy, seed=seed, eval_every=0)
        t0 = time.perf_counter()
        fed.run(rounds, progress=False)
        seconds = time.perf_counter() - t0
        last["engine"] = fed
        return seconds

    def hand() -> float:
        model = copy.deepcopy(init)
        t0 = time.perf_counter()
        last["raw"] = _raw_loop(model, data, schedule, seed, epochs, bs, lr)
        return time.perf_counter() - t0

    timing = paired_timing(engine, hand, pairs=pairs, warmup=1)
    fed = last["engine"]
    engine_arrays = {k: v for group in get_arrays(fed.model).values() for k, v in group.items()}
    raw = last["raw"]
    max_diff = max(float(np.max(np.abs(engine_arrays[k] - raw[k]))) for k in raw)
    return {
        "rounds": rounds,
        "clients": data.num_clients,
        "clients_per_round": 10,
        "pairs": pairs,
        "engine_seconds": statistics.median(timing["a_seconds"]),
        "raw_seconds": statistics.median(timing["b_seconds"]),
        "overhead_ratio": timing["ratio"],
        "overhead_ratio_min": timing["ratio_min"],
        "overhead_ratio_max": timing["ratio_max"],
        "max_abs_weight_diff": max_diff,
        "measured_step_signatures": len(fed.meter),
    }


def _finish(out: dict[str, Any]) -> None:
    out["target_met"] = bool(out["overhead_ratio"] <= 1.10)


OVERHEAD = Benchmark(
    "core-overhead",
    _seed,
    finish=_finish,
    headline=(
        "overhead_ratio",
        "overhead_ratio_min",
        "overhead_ratio_max",
        "engine_seconds",
        "raw_seconds",
        "max_abs_weight_diff",
    ),
    protocol="2",
)
