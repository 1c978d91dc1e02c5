"""Server optimizers: the server treats the round's averaged update as a pseudo-gradient.

FedAvg sets the global model to the clients' average. A server optimizer instead takes
``Δ = average − x`` (the negative pseudo-gradient) and steps ``x`` with its own rule:

* :class:`FedAvgM` — server momentum (Hsu, Qi, Brown 2019, arXiv 1909.06335):
  ``v ← β v + Δ``, ``x ← x + η v``;
* :class:`FedAdam`, :class:`FedYogi`, :class:`FedAdagrad` — adaptive federated optimisation
  (Reddi et al., ICLR 2021, arXiv 2003.00295, Algorithm 2): ``m ← β1 m + (1 − β1) Δ``, then
  ``v ← β2 v + (1 − β2) Δ²`` (Adam), ``v ← v − (1 − β2) Δ² sign(v − Δ²)`` (Yogi) or ``v ← v + Δ²``
  (Adagrad), and ``x ← x + η m / (√v + τ)``; ``m`` starts at 0, ``v`` at ``τ²`` (the paper's
  ``v_{-1} ≥ τ²``), no bias correction.

The average is whatever the round's aggregation produced — core's FedAvg, or a technique that owns
``aggregate`` (FedMVP's CKA weights, FedMFS's plain mean, FedNova) — so a server optimizer composes
with every technique. A group no client uploaded this round is left exactly as it was and its
optimizer state does not move (FedMFS's modality models that nobody sent stay bit-exact); integer
arrays (counters) take the average as it is. ``FedAvgM(momentum=0, server_lr=1)`` *is* FedAvg and
returns the average unchanged, bit for bit.

Select one in Python (``FedAvg(..., server_optimizer=FedAdam(server_lr=0.01))``) or in a config:
``[strategy] server_optimizer = "fedadam"`` with ``server_lr``, ``beta1``, ``beta2``, ``tau``
(``server_momentum`` for ``"fedavgm"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from fedmm.core.arguments import number
from fedmm.core.arrays import GroupedArrays

__all__ = [
    "SERVER_OPTIMIZERS",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedYogi",
    "ServerOptimizer",
    "server_optimizer",
]


class ServerOptimizer:
    """Base: :meth:`step` turns the round's average into the next global model; subclasses
    implement :meth:`_update` for one float array. State (momenta) is per array key."""

    name: ClassVar[str] = ""

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = number(self._owner(), "server_lr", server_lr, low=0, low_open=True)
        self.state: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def _owner(cls) -> str:
        return cls.__name__

    def config(self) -> dict[str, Any]:
        return {"server_lr": self.server_lr}

    def step(self, previous: GroupedArrays, average: GroupedArrays, updated: Iterable[str]) -> GroupedArrays:
        """The next global arrays from ``previous`` (this round's global model) and ``average``
        (the round's aggregation); only the ``updated`` groups (uploaded by some client) move."""
        moved = set(updated)
        out: GroupedArrays = {}
        for group, arrays in average.items():
            if group not in moved or group not in previous:
                out[group] = dict(arrays)
                continue
            merged: dict[str, np.ndarray] = {}
            for key, avg in arrays.items():
                before = previous[group][key]
                if not np.issubdtype(before.dtype, np.floating):
                    merged[key] = avg
                    continue
                x = np.asarray(before, dtype=np.float64)
                delta = np.asarray(avg, dtype=np.float64) - x
                merged[key] = self._update(key, x, delta).astype(before.dtype)
            out[group] = merged
        return out

    def _slot(self, key: str, name: str, like: np.ndarray, fill: float = 0.0) -> np.ndarray:
        slots = self.state.setdefault(key, {})
        if name not in slots:
            slots[name] = np.full(like.shape, fill, dtype=np.float64)
        return slots[name]

    def _update(self, key: str, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"state": {k: {n: v.copy() for n, v in s.items()} for k, s in self.state.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state = {
            str(k): {str(n): np.asarray(v, dtype=np.float64) for n, v in s.items()}
            for k, s in dict(state.get("state", {})).items()
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class FedAvgM(ServerOptimizer):
    """Server momentum: ``v ← β v + Δ``, ``x ← x + η v`` (Hsu et al., 2019)."""

    name = "fedavgm"

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__(server_lr)
        self.momentum = number(self._owner(), "momentum", momentum, low=0, high=1, high_open=True)

    def config(self) -> dict[str, Any]:
        return {"server_lr": self.server_lr, "momentum": self.momentum}

    def step(self, previous: GroupedArrays, average: GroupedArrays, updated: Iterable[str]) -> GroupedArrays:
        if self.momentum == 0 and self.server_lr == 1:
            return average  # x + (avg − x) is avg: return it exactly, as FedAvg does
        return super().step(previous, average, updated)

    def _update(self, key: str, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        v = self._slot(key, "v", x)
        v *= self.momentum
        v += delta
        return x + self.server_lr * v


class _Adaptive(ServerOptimizer):
    """FedOpt's shared part (Reddi et al., 2021, Algorithm 2)."""

    def __init__(
        self, server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(server_lr)
        owner = self._owner()
        self.beta1 = number(owner, "beta1", beta1, low=0, high=1, high_open=True)
        self.beta2 = number(owner, "beta2", beta2, low=0, high=1, high_open=True)
        self.tau = number(owner, "tau", tau, low=0, low_open=True)

    def config(self) -> dict[str, Any]:
        return {"server_lr": self.server_lr, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        raise NotImplementedError

    def _update(self, key: str, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        m = self._slot(key, "m", x)
        v = self._slot(key, "v", x, fill=self.tau**2)
        m *= self.beta1
        m += (1 - self.beta1) * delta
        self._second_moment(v, delta)
        return x + self.server_lr * m / (np.sqrt(v) + self.tau)


class FedAdam(_Adaptive):
    """``v ← β2 v + (1 − β2) Δ²``.

    FedMultimodal's "FedOpt" is not this: its code steps the server with SGD and momentum 0.9
    (lr 0.025 on the update divided by the client lr 0.05), i.e. ``FedAvgM(server_lr=0.5)``.
    """

    name = "fedadam"

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        v *= self.beta2
        v += (1 - self.beta2) * delta**2


class FedYogi(_Adaptive):
    """``v ← v − (1 − β2) Δ² sign(v − Δ²)``."""

    name = "fedyogi"

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        d2 = delta**2
        v -= (1 - self.beta2) * d2 * np.sign(v - d2)


class FedAdagrad(_Adaptive):
    """``v ← v + Δ²`` (``beta2`` is not used)."""

    name = "fedadagrad"

    def _second_moment(self, v: np.ndarray, delta: np.ndarray) -> None:
        v += delta**2


SERVER_OPTIMIZERS: dict[str, type[ServerOptimizer]] = {
    c.name: c for c in (FedAvgM, FedAdam, FedYogi, FedAdagrad)
}


def server_optimizer(name: str, **options: Any) -> ServerOptimizer:
    """The server optimizer ``name`` (one of :data:`SERVER_OPTIMIZERS`) with ``options``."""
    from fedmm.core.errors import ConfigError

    if name not in SERVER_OPTIMIZERS:
        raise ConfigError(
            f"unknown server optimizer {name!r}; choose one of {', '.join(sorted(SERVER_OPTIMIZERS))}"
        )
    try:
        return SERVER_OPTIMIZERS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"server optimizer {name!r}: {exc}") from exc
