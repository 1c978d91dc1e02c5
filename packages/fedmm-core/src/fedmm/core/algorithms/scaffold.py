"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, ICML 2020, arXiv 1910.06378).

Client drift on heterogeneous data is corrected with control variates: the server keeps ``c``, each
client ``c_i`` (in its own state, across rounds), and every local step follows ``g − c_i + c``
instead of the gradient ``g``. Here the correction is the loss term ``⟨c − c_i, θ⟩`` (its gradient
is exactly ``c − c_i``), so SCAFFOLD composes with any technique's losses and the client optimiser.

Per round:

* ``configure`` (server): the plan carries ``c`` (counted in the download);
* ``prepare`` (client): keep the received weights ``x`` for the round, start ``c_i`` at 0;
* ``loss_terms``: ``⟨c − c_i, θ⟩`` over the trainable parameters; it also counts the steps ``K``;
* ``report``: option II of the paper, ``c_i⁺ = c_i − c + (x − y_i) / (K η)`` with the client's
  final weights ``y_i`` and learning rate ``η``; ``c_i⁺`` replaces ``c_i`` in the client's state
  and ``Δc_i = c_i⁺ − c_i`` is reported (counted in the upload);
* ``after_round`` (server): ``c ← c + (1/N) Σ_{i ∈ S} Δc_i`` over the round's ``S`` of ``N`` clients.

The model update is the round's aggregation (core's sample-weighted FedAvg, or a server optimizer
on top): the paper's global step with ``η_g = 1`` and sample weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fedmm.core.algorithms.common import forget, keep_received_weights
from fedmm.core.arguments import TechniqueArguments
from fedmm.core.data.types import Batch, ClientData
from fedmm.core.models.model import ModelOutput
from fedmm.core.protocol import ClientContext, ResultsContext, RoundContext, Technique, TrainPlan

__all__ = ["Scaffold", "control_variate_update"]

SERVER_C = "scaffold/c/"  # plan extras: the server's control variate
CLIENT_C = "scaffold/ci/"  # client state: its control variate (kept across rounds)
START = "scaffold/x/"  # client state, during the round: the received weights
STEPS = "scaffold/steps"
DELTA = "scaffold/dc/"  # report: Δc_i


def control_variate_update(
    c_i: np.ndarray, c: np.ndarray, x: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> np.ndarray:
    """SCAFFOLD's option II: ``c_i⁺ = c_i − c + (x − y) / (K η)``."""
    return c_i - c + (x - y) / (max(int(steps), 1) * lr)


class Scaffold(Technique):
    """Control-variate drift correction (no arguments). The server's ``c`` is its state."""

    name: ClassVar[str] = "scaffold"
    Arguments: ClassVar[type[TechniqueArguments]] = TechniqueArguments

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.c: dict[str, np.ndarray] = {}  # by parameter name

    # -- server --------------------------------------------------------------------------------
    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        if not self.c:
            for arrays in ctx.global_arrays.values():
                for key, a in arrays.items():
                    if np.issubdtype(a.dtype, np.floating):
                        self.c[key] = np.zeros(a.shape, dtype=np.float32)
        return plan.with_extra(**{SERVER_C + k: v for k, v in self.c.items()})

    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        reports = [r.report for r in ctx.results]
        for key, c in self.c.items():
            deltas = [rep[DELTA + key] for rep in reports if DELTA + key in rep]
            if deltas:
                total = np.sum(np.stack([np.asarray(d, dtype=np.float64) for d in deltas]), axis=0)
                self.c[key] = (c + total / ctx.num_clients).astype(np.float32)
        if self.c:
            metrics["scaffold/c_norm"] = float(
                np.sqrt(sum(float((c.astype(np.float64) ** 2).sum()) for c in self.c.values()))
            )

    def state_dict(self) -> dict[str, Any]:
        return {"c": {k: v.copy() for k, v in self.c.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.c = {str(k): np.asarray(v, dtype=np.float32) for k, v in dict(state.get("c", {})).items()}

    # -- client --------------------------------------------------------------------------------
    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        keep_received_weights(cctx, START)
        for key in [k[len(START) :] for k in cctx.state if k.startswith(START)]:
            if CLIENT_C + key not in cctx.state:
                cctx.state[CLIENT_C + key] = np.zeros(cctx.state[START + key].shape, dtype=np.float32)
        cctx.state[STEPS] = np.zeros(1, dtype=np.int64)
        return data

    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        cctx.state[STEPS] = cctx.state[STEPS] + 1
        if cctx.model is None:
            return {}
        total: torch.Tensor | None = None
        for key, p in cctx.model.named_parameters():
            c = cctx.plan.extra.get(SERVER_C + key)
            c_i = cctx.state.get(CLIENT_C + key)
            if c is None or c_i is None or not p.requires_grad:
                continue
            # ⟨c − c_i, θ⟩: its gradient is the correction c − c_i (a constant: no graph through it).
            term = (p * torch.from_numpy(np.asarray(c, dtype=np.float32) - c_i).to(p.device, p.dtype)).sum()
            total = term if total is None else total + term
        return {} if total is None else {"scaffold/correction": total}

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        steps = int(cctx.state.pop(STEPS, np.zeros(1))[0])
        out: dict[str, Any] = {}
        for key, p in model.named_parameters():
            x = cctx.state.pop(START + key, None)
            c = cctx.plan.extra.get(SERVER_C + key)
            if x is None or c is None or steps == 0:
                continue
            c_i = cctx.state[CLIENT_C + key]
            y = p.detach().cpu().numpy()
            new = control_variate_update(
                c_i.astype(np.float64),
                np.asarray(c, np.float64),
                x.astype(np.float64),
                y,
                steps,
                cctx.plan.lr,
            ).astype(np.float32)
            out[DELTA + key] = new - c_i
            cctx.state[CLIENT_C + key] = new
        forget(cctx, START)
        return out
