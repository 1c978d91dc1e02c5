"""The ledger: measured cost per client per round, and per round on the server.

Client side (:class:`ClientCost`): bytes down/up, training FLOPs, peak memory, time, and the work
of every client hook a technique overrides (``flops_by_hook`` / ``seconds_by_hook``). Server side
(:class:`ServerCost`): the FLOPs and seconds of each server phase of a round (``select_clients``,
``configure``, ``aggregate``, ``after_round``); evaluating the test set is measurement, not method
cost, and is kept apart (``eval_seconds``).

Bytes are the buffer sizes of the arrays that actually crossed (model groups and report arrays);
FLOPs are counted by torch's FlopCounterMode formulas on the operators that really ran; peak
memory is the measured peak of live tensor storage during a real step (see
:mod:`fedmm.core.measure`). Work outside torch (numpy, cvxpy…) has no FLOP count: it shows in the
seconds only.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Client hooks charged in ``ClientCost.flops_by_hook`` / ``seconds_by_hook``.
CLIENT_HOOKS = ("train", "prepare", "loss_terms", "report", "upload")
# The hooks whose work adds up to the client's total: ``loss_terms`` runs inside ``train``.
CLIENT_TOTAL_HOOKS = ("train", "prepare", "report", "upload")
# Server phases charged in ``ServerCost.flops_by_phase`` / ``seconds_by_phase``.
SERVER_PHASES = ("select_clients", "configure", "aggregate", "after_round")


@dataclass
class ClientCost:
    """Measured cost of one client's round.

    ``flops`` / ``peak_bytes`` are those of the optimiser steps (forward, loss, backward,
    update); ``seconds`` is the wall time of the whole ``client_round`` (hooks and the engine's
    own bookkeeping). Per hook (keys of :data:`CLIENT_HOOKS`, present only for hooks that ran):

    - ``train``: the optimiser steps — ``flops_by_hook["train"] == flops``, and the seconds of
      the training loop;
    - ``prepare``, ``report``, ``upload``: run outside the steps, measured around the calls of the
      techniques that override them (FLOPs of torch ops; other work shows in seconds only);
    - ``loss_terms``: run inside each step. Seconds are timed around the hook calls on every step.
      FLOPs are the *forward* FLOPs of the terms, measured at the steps that are measured anyway
      (once per step signature, cached with the step's FLOPs) and charged on every step; their
      backward is inside ``train``, and so is this forward: ``loss_terms`` is a part of
      ``train``, never added to it.

    ``client_flops`` / ``client_seconds`` are all the client's measured work: train + prepare +
    report + upload.

    ``flops_by_combination`` splits ``flops`` by the plan's modality ``combinations`` (``"a+b"``;
    ``"all"`` for steps of a plan that restricts none), so its values add up to ``flops``. It is
    filled for every client, whatever the techniques: combinations are a core plan field and core's
    training loop runs them, so only core can measure each one. It shows where a schedule put the
    compute — FlexMod's, Entire / Partial Update's, BMSFed's single-modality clients.
    """

    round: int = 0
    client_id: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    flops: int = 0
    peak_bytes: int = 0
    seconds: float = 0.0
    steps: int = 0
    # Which parameter groups crossed each way (the bytes above are their buffers' sizes).
    groups_down: tuple[str, ...] = ()
    groups_up: tuple[str, ...] = ()
    # ``flops`` per trained modality combination of the plan ("a+b"; "all" when it names none).
    flops_by_combination: dict[str, int] = dataclasses.field(default_factory=dict)
    flops_by_hook: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds_by_hook: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def client_flops(self) -> int:
        return self.flops + sum(self.flops_by_hook.get(h, 0) for h in CLIENT_TOTAL_HOOKS if h != "train")

    @property
    def client_seconds(self) -> float:
        return sum(self.seconds_by_hook.get(h, 0.0) for h in CLIENT_TOTAL_HOOKS)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["groups_down"], d["groups_up"] = list(self.groups_down), list(self.groups_up)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientCost:
        d = dict(d)
        for key in ("groups_down", "groups_up"):
            d[key] = tuple(d.get(key, ()))
        d["flops_by_combination"] = {str(k): int(v) for k, v in d.get("flops_by_combination", {}).items()}
        flops_by_hook = {str(k): int(v) for k, v in d.get("flops_by_hook", {}).items()}
        seconds_by_hook = {str(k): float(v) for k, v in d.get("seconds_by_hook", {}).items()}
        # Older checkpoints kept the prepare hooks' work in two fields. Their training seconds
        # were not measured apart from the round's, so "train" gets FLOPs only.
        prepare_flops, prepare_seconds = d.pop("prepare_flops", None), d.pop("prepare_seconds", None)
        if "flops_by_hook" not in d:
            flops_by_hook["train"] = int(d.get("flops", 0))
            if prepare_flops or prepare_seconds:
                flops_by_hook["prepare"] = int(prepare_flops or 0)
                seconds_by_hook["prepare"] = float(prepare_seconds or 0.0)
        d["flops_by_hook"], d["seconds_by_hook"] = flops_by_hook, seconds_by_hook
        return cls(**d)


@dataclass
class ServerCost:
    """Measured cost of one round's server work.

    ``flops_by_phase`` / ``seconds_by_phase`` (keys of :data:`SERVER_PHASES`): the technique work
    on the server — selection, planning, aggregation, and ``after_round`` (Shapley evaluations,
    allocation, agent updates…). Seconds are timed for every phase that ran; FLOPs (torch ops,
    FlopCounterMode formulas) are counted only for phases a technique or the strategy overrides,
    so the default numpy FedAvg costs no counter; numpy/cvxpy work shows in the seconds only.
    ``eval_seconds`` is the engine's test-set evaluation: measurement, not method cost, so it is
    not in ``flops``/``seconds``.
    """

    round: int = 0
    flops_by_phase: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds_by_phase: dict[str, float] = dataclasses.field(default_factory=dict)
    eval_seconds: float = 0.0

    @property
    def flops(self) -> int:
        return sum(self.flops_by_phase.values())

    @property
    def seconds(self) -> float:
        return sum(self.seconds_by_phase.values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServerCost:
        return cls(
            round=int(d.get("round", 0)),
            flops_by_phase={str(k): int(v) for k, v in d.get("flops_by_phase", {}).items()},
            seconds_by_phase={str(k): float(v) for k, v in d.get("seconds_by_phase", {}).items()},
            eval_seconds=float(d.get("eval_seconds", 0.0)),
        )


TOTALLED = ("bytes_down", "bytes_up", "flops", "seconds", "steps", "client_flops", "client_seconds")


class Ledger:
    """All costs of a run (clients' and the server's); per-round and per-run totals.

    Totals are flat keys (they land in ``metrics.jsonl`` as ``ledger/<key>``): the sums of
    :data:`TOTALLED`, ``peak_bytes`` (max), ``clients``, ``flops_by_hook/<hook>`` and
    ``seconds_by_hook/<hook>`` for every client hook, ``server_flops`` / ``server_seconds`` and
    ``server_flops/<phase>`` / ``server_seconds/<phase>`` for every server phase, and
    ``eval_seconds`` (apart from the server's totals).
    """

    def __init__(self, records: Iterable[ClientCost] = (), server: Iterable[ServerCost] = ()) -> None:
        self.records: list[ClientCost] = list(records)
        self.server: list[ServerCost] = list(server)

    def extend(self, costs: Iterable[ClientCost]) -> None:
        self.records.extend(costs)

    def add_server(self, cost: ServerCost) -> None:
        self.server.append(cost)

    def __len__(self) -> int:
        return len(self.records)

    def round_totals(self, round_: int) -> dict[str, float]:
        return self._totals(
            (r for r in self.records if r.round == round_), (s for s in self.server if s.round == round_)
        )

    def per_round(self) -> dict[int, dict[str, float]]:
        clients: dict[int, list[ClientCost]] = defaultdict(list)
        server: dict[int, list[ServerCost]] = defaultdict(list)
        for r in self.records:
            clients[r.round].append(r)
        for s in self.server:
            server[s.round].append(s)
        return {k: self._totals(clients[k], server[k]) for k in sorted(set(clients) | set(server))}

    def totals(self) -> dict[str, float]:
        return self._totals(self.records, self.server)

    @staticmethod
    def _totals(records: Iterable[ClientCost], server: Iterable[ServerCost] = ()) -> dict[str, float]:
        # Every known key is present (zero when nothing ran), so metrics.jsonl rows share columns.
        out: dict[str, float] = dict.fromkeys(TOTALLED, 0)
        out["peak_bytes"] = 0
        out["clients"] = 0
        for hook in CLIENT_HOOKS:
            out[f"flops_by_hook/{hook}"] = 0
            out[f"seconds_by_hook/{hook}"] = 0.0
        out["server_flops"], out["server_seconds"], out["eval_seconds"] = 0, 0.0, 0.0
        for phase in SERVER_PHASES:
            out[f"server_flops/{phase}"] = 0
            out[f"server_seconds/{phase}"] = 0.0
        for r in records:
            for key in TOTALLED:
                out[key] += getattr(r, key)
            out["peak_bytes"] = max(out["peak_bytes"], r.peak_bytes)
            out["clients"] += 1
            for hook, n in r.flops_by_hook.items():
                out[f"flops_by_hook/{hook}"] = out.get(f"flops_by_hook/{hook}", 0) + n
            for hook, sec in r.seconds_by_hook.items():
                out[f"seconds_by_hook/{hook}"] = out.get(f"seconds_by_hook/{hook}", 0.0) + sec
        for s in server:
            out["server_flops"] += s.flops
            out["server_seconds"] += s.seconds
            out["eval_seconds"] += s.eval_seconds
            for phase, n in s.flops_by_phase.items():
                out[f"server_flops/{phase}"] = out.get(f"server_flops/{phase}", 0) + n
            for phase, sec in s.seconds_by_phase.items():
                out[f"server_seconds/{phase}"] = out.get(f"server_seconds/{phase}", 0.0) + sec
        return out

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]

    def server_to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.server]

    @classmethod
    def from_list(cls, items: Iterable[dict[str, Any]], server: Iterable[dict[str, Any]] = ()) -> Ledger:
        return cls((ClientCost.from_dict(d) for d in items), (ServerCost.from_dict(d) for d in server))
