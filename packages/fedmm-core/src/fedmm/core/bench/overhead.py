"""core-overhead: the in-process engine against a hand-written PyTorch loop doing the same work.

Both run the same clients (the engine's selection, replayed), the same model, data order,
optimiser and FedAvg; the hand loop has no hooks, no ledger, no validation and no FLOP/memory
measurement. ``overhead_ratio = engine_seconds / raw_seconds``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.core.arrays import get_arrays
from fedmm.core.client import derive_seed
from fedmm.core.data.registry import load as load_dataset
from fedmm.core.data.types import Batch, FederatedDataset
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


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    seed = 0
    rounds = 10 if quick else 40
    data = load_dataset("av-digits", clients=20, partition="dirichlet", alpha=0.5, seed=seed)
    torch.manual_seed(seed)
    model = late_fusion(data.modalities, data.num_classes)
    init = copy.deepcopy(model)
    epochs, bs, lr = 2, 32, 0.05
    strategy = FedAvg(clients_per_round=10, local_epochs=epochs, batch_size=bs, lr=lr, momentum=0.9)

    # Warm-up both paths once (allocator, kernels) so neither pays first-call costs.
    _raw_loop(copy.deepcopy(init), data, [[0]], seed, 1, bs, lr)
    Federation(copy.deepcopy(init), data, strategy, seed=seed + 1, eval_every=0).run(1, progress=False)

    fed = Federation(copy.deepcopy(init), data, strategy, seed=seed, eval_every=0)
    t0 = time.perf_counter()
    fed.run(rounds, progress=False)
    engine_seconds = time.perf_counter() - t0
    schedule = [
        [int(c) for c in strategy.select_clients(fed.context(r)).tolist()] for r in range(1, rounds + 1)
    ]
    raw_model = copy.deepcopy(init)
    t0 = time.perf_counter()
    raw = _raw_loop(raw_model, data, schedule, seed, epochs, bs, lr)
    raw_seconds = time.perf_counter() - t0

    engine_arrays = {k: v for group in get_arrays(fed.model).values() for k, v in group.items()}
    max_diff = max(float(np.max(np.abs(engine_arrays[k] - raw[k]))) for k in raw)
    return {
        "benchmark": "core-overhead",
        "quick": quick,
        "rounds": rounds,
        "clients": data.num_clients,
        "clients_per_round": 10,
        "engine_seconds": engine_seconds,
        "raw_seconds": raw_seconds,
        "overhead_ratio": engine_seconds / raw_seconds,
        "max_abs_weight_diff": max_diff,
        "measured_step_signatures": len(fed.meter),
    }
