"""Engines: what runs a round's planned clients.

The server's round (:mod:`fedmm.core.round`) is the same code on every engine; an engine does
one phase of it, ``train``: given the round's plans (and the global arrays, seeds and kept client
states they need) it runs the clients and answers with their results and the clients it lost.
It is an object passed to the round, never a callback swapped on the federation:

- :class:`InProcessEngine`: the clients one after another in this process (the default);
- :class:`fedmm.core.flower.FlowerEngine`: each client as a Flower ``train`` message to the
  SuperNode holding its partition (simulation or deployment).

An engine reports every planned client: as a result or as a :class:`~fedmm.core.failures.ClientDrop`
(who, and why). A client it says nothing about is counted as dropped for an unknown cause.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from torch import nn

from fedmm.core.arrays import GroupedArrays
from fedmm.core.client import StepMeter, client_round
from fedmm.core.data.types import FederatedDataset
from fedmm.core.failures import ClientDrop
from fedmm.core.protocol import ClientResult, Technique, TrainPlan

log = logging.getLogger("fedmm")


@dataclass(frozen=True)
class TrainRequest:
    """One round's client work, as the server hands it to an engine.

    ``plans``: client id → its plan, in the order results should come back; ``seeds``: client id
    → the seed its round must use (so every engine gives the same numbers); ``states``: the kept
    state the server holds for each client (engines whose clients keep their own ignore it).
    """

    round: int
    global_arrays: GroupedArrays
    plans: Mapping[int, TrainPlan]
    seeds: Mapping[int, int]
    states: Mapping[int, Mapping[str, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainOutcome:
    """What an engine answers: the clients that came back and those it lost (with the cause)."""

    results: tuple[ClientResult, ...] = ()
    drops: tuple[ClientDrop, ...] = ()


@runtime_checkable
class Engine(Protocol):
    """Runs the planned clients of a round (see the module docstring)."""

    def train(self, request: TrainRequest) -> TrainOutcome: ...


class InProcessEngine:
    """Runs the planned clients here, one after another, on one working ``model`` (its weights are
    overwritten each client round). A client whose round raises is dropped with its error; the
    others go on."""

    def __init__(
        self,
        model: nn.Module,
        data: FederatedDataset,
        techniques: Sequence[Technique],
        *,
        meter: StepMeter | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.techniques = list(techniques)
        # Caches each step signature's measured FLOPs and memory across rounds.
        self.meter = meter if meter is not None else StepMeter()

    def train(self, request: TrainRequest) -> TrainOutcome:
        results: list[ClientResult] = []
        drops: list[ClientDrop] = []
        for cid, plan in request.plans.items():
            try:
                result = client_round(
                    self.model,
                    request.global_arrays,
                    plan,
                    self.data.client(cid),
                    request.states.get(cid, {}),
                    self.techniques,
                    round_=request.round,
                    seed=request.seeds[cid],
                    modalities=self.data.modalities,
                    num_classes=self.data.num_classes,
                    meter=self.meter,
                )
            except Exception as exc:  # a failing client must not stop the round
                drops.append(ClientDrop.from_exception(cid, exc))
                # One line per client only with -v: the round logs its drops by cause.
                log.debug("round %d: client %d dropped: %s", request.round, cid, drops[-1].error)
                continue
            results.append(result)
        return TrainOutcome(tuple(results), tuple(drops))


__all__ = ["Engine", "InProcessEngine", "TrainOutcome", "TrainRequest"]
