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
from fedmm.core.batched import BatchedTrainer, batching_obstacle
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
    """Runs the planned clients here on one working ``model`` (its weights are overwritten each
    client round). With ``batch_clients`` (the default) a round whose plans allow it trains its
    clients together as one vectorised computation (:mod:`fedmm.core.batched`: the same numbers
    up to floating-point reassociation); otherwise, and with ``batch_clients=False``, one after
    another, and the log says once why a round could not be batched. A client whose round raises
    is dropped with its error; the others go on."""

    def __init__(
        self,
        model: nn.Module,
        data: FederatedDataset,
        techniques: Sequence[Technique],
        *,
        meter: StepMeter | None = None,
        batch_clients: bool = True,
    ) -> None:
        self.model = model
        self.data = data
        self.techniques = list(techniques)
        # Caches each step signature's measured FLOPs and memory across rounds.
        self.meter = meter if meter is not None else StepMeter()
        self.batch_clients = batch_clients
        self._batched: BatchedTrainer | None = None
        self._told: set[str] = set()  # the reasons already logged for running one by one
        # Rounds trained batched and one by one (what a benchmark or a user can check).
        self.rounds_batched = 0
        self.rounds_sequential = 0

    def _say_once(self, reason: str) -> None:
        if reason not in self._told:
            self._told.add(reason)
            log.info("in-process engine: clients train one by one, not batched: %s", reason)

    def train(self, request: TrainRequest) -> TrainOutcome:
        if self.batch_clients and len(request.plans) > 1:
            obstacle = batching_obstacle(self.model, request.plans, self.techniques)
            if obstacle is None:
                if self._batched is None:
                    self._batched = BatchedTrainer(self.model, self.meter)
                try:
                    results, drops = self._batched.train(
                        request.global_arrays,
                        request.plans,
                        {cid: self.data.client(cid) for cid in request.plans},
                        request.states,
                        request.seeds,
                        self.techniques,
                        round_=request.round,
                        modalities=self.data.modalities,
                        num_classes=self.data.num_classes,
                    )
                except Exception as exc:  # the model does not vectorise: never try again
                    self.batch_clients = False
                    self._say_once(f"the vectorised step failed ({type(exc).__name__}: {exc})")
                else:
                    self.rounds_batched += 1
                    for drop in drops:  # one line per client only with -v, as one by one
                        log.debug(
                            "round %d: client %d dropped: %s", request.round, drop.client_id, drop.error
                        )
                    return TrainOutcome(tuple(results), tuple(drops))
            else:
                self._say_once(obstacle)
        self.rounds_sequential += 1
        results = []
        drops = []
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
