"""The ledger: measured cost per client per round — bytes down/up, training FLOPs, peak memory, time.

Bytes are the buffer sizes of the arrays that actually crossed (model groups and report arrays);
FLOPs are counted by torch's FlopCounterMode on the real forward+backward+step; peak memory is
the measured peak of live tensor storage during a real step (see :mod:`fedmm.core.measure`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class ClientCost:
    """Measured cost of one client's round."""

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
    # FLOPs per trained modality combination ("a+b", or "all" when the plan did not restrict it).
    flops_by_combination: dict[str, int] = dataclasses.field(default_factory=dict)
    # The `prepare` hooks' work (e.g. completing missing modalities), outside `flops`/`seconds`' steps.
    prepare_flops: int = 0
    prepare_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["groups_down"], d["groups_up"] = list(self.groups_down), list(self.groups_up)
        d["flops_by_combination"] = dict(self.flops_by_combination)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientCost:
        d = dict(d)
        for key in ("groups_down", "groups_up"):
            d[key] = tuple(d.get(key, ()))
        d["flops_by_combination"] = {str(k): int(v) for k, v in d.get("flops_by_combination", {}).items()}
        return cls(**d)


TOTALLED = ("bytes_down", "bytes_up", "flops", "seconds", "steps", "prepare_flops", "prepare_seconds")


class Ledger:
    """All clients' costs of a run; per-round and per-run totals."""

    def __init__(self, records: Iterable[ClientCost] = ()) -> None:
        self.records: list[ClientCost] = list(records)

    def add(self, cost: ClientCost) -> None:
        self.records.append(cost)

    def extend(self, costs: Iterable[ClientCost]) -> None:
        self.records.extend(costs)

    def __len__(self) -> int:
        return len(self.records)

    def round_totals(self, round_: int) -> dict[str, float]:
        return self._totals(r for r in self.records if r.round == round_)

    def per_round(self) -> dict[int, dict[str, float]]:
        grouped: dict[int, list[ClientCost]] = defaultdict(list)
        for r in self.records:
            grouped[r.round].append(r)
        return {k: self._totals(v) for k, v in sorted(grouped.items())}

    def totals(self) -> dict[str, float]:
        return self._totals(self.records)

    def by_client(self, client_id: int) -> list[ClientCost]:
        return [r for r in self.records if r.client_id == client_id]

    @staticmethod
    def _totals(records: Iterable[ClientCost]) -> dict[str, float]:
        out: dict[str, float] = dict.fromkeys(TOTALLED, 0)
        out["peak_bytes"] = 0
        out["clients"] = 0
        for r in records:
            for key in TOTALLED:
                out[key] += getattr(r, key)
            out["peak_bytes"] = max(out["peak_bytes"], r.peak_bytes)
            out["clients"] += 1
        return out

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]

    @classmethod
    def from_list(cls, items: Iterable[dict[str, Any]]) -> Ledger:
        return cls(ClientCost.from_dict(d) for d in items)
