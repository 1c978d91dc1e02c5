"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020, arXiv 1812.06127).

Each client adds the proximal term ``μ/2 ‖θ − θ_g‖²`` to its local loss, ``θ_g`` being the global
model it received this round, so local training cannot drift far from it on heterogeneous data.
As a technique it composes with any other one (the term is added to whatever losses they add):
``prepare`` keeps a copy of the received trainable weights in the client's state for the round,
``loss_terms`` adds the term every step (charged to the client as loss-term work), ``report``
drops the copy. ``mu = 0`` adds nothing: the run is FedAvg's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from fedmm.core.algorithms.common import forget, keep_received_weights
from fedmm.core.arguments import TechniqueArguments
from fedmm.core.data.types import Batch, ClientData
from fedmm.core.models.model import ModelOutput
from fedmm.core.protocol import ClientContext, Technique, TrainPlan

__all__ = ["FedProx", "FedProxArguments"]

ANCHOR = "fedprox/global/"  # the round's received weights, in the client's state during the round


class FedProxArguments(TechniqueArguments):
    mu: float = Field(0.01, ge=0, description="μ of the proximal term μ/2 ‖θ − θ_global‖² (0 = FedAvg)")


class FedProx(Technique):
    """The proximal term on every client's local loss. Arguments: :class:`FedProxArguments`."""

    name: ClassVar[str] = "fedprox"
    Arguments: ClassVar[type[TechniqueArguments]] = FedProxArguments
    args: FedProxArguments

    def prepare(self, cctx: ClientContext, data: ClientData) -> ClientData:
        if self.args.mu > 0:
            keep_received_weights(cctx, ANCHOR)
        return data

    def loss_terms(
        self, cctx: ClientContext, batch: Batch, outputs: ModelOutput
    ) -> Mapping[str, torch.Tensor]:
        if self.args.mu == 0 or cctx.model is None:
            return {}
        total: torch.Tensor | None = None
        for key, p in cctx.model.named_parameters():
            anchor = cctx.state.get(ANCHOR + key)
            if anchor is None or not p.requires_grad:
                continue
            d = (p - torch.from_numpy(anchor).to(p.device, p.dtype)).pow(2).sum()
            total = d if total is None else total + d
        return {} if total is None else {"fedprox/proximal": 0.5 * self.args.mu * total}

    def adds_loss_terms(self, plan: TrainPlan) -> bool:
        return self.args.mu > 0  # mu = 0 is FedAvg: its clients can train batched

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        forget(cctx, ANCHOR)  # only needed during the round
        return {}
