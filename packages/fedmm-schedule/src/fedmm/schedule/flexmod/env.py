"""FlexMod's scheduling problem as a gymnasium environment (id ``fedmm/FlexMod-v0``).

One step is one federated round: the action is β ∈ [0, 1] (how much the allocation follows
modality importance rather than training need), the observation the normalised importance and
training-need vectors plus the previous β and the validation accuracy, the reward the round's
change of the exponentially smoothed validation accuracy (:func:`smoothed_accuracy`; with
``reward_smoothing=0`` the raw validation-accuracy improvement of spec §3.4). The rounds are run
by a *simulator*; by default a small real federation (:class:`FederationSimulator` on a
synthetic two-modality task), so ``gymnasium.make("fedmm/FlexMod-v0")`` works out of the box,
passes ``check_env`` and can pre-train the DDPG agent offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = [
    "ENV_ID",
    "REWARD_SMOOTHING",
    "FederationSimulator",
    "FlexModEnv",
    "RoundSignals",
    "Simulator",
    "observation",
    "smoothed_accuracy",
]

ENV_ID = "fedmm/FlexMod-v0"
# The weight of the past in the smoothed validation accuracy whose change is the reward.
REWARD_SMOOTHING = 0.5


@dataclass(frozen=True)
class RoundSignals:
    """What the server knows after a round: ``φ̂`` and ``u`` per modality, and validation accuracy."""

    importance: np.ndarray
    need: np.ndarray
    accuracy: float


def observation(signals: RoundSignals, beta: float) -> np.ndarray:
    """``[φ̂_1..φ̂_M, u_1..u_M, β_prev, acc]`` as float32."""
    return np.concatenate([signals.importance, signals.need, [beta, signals.accuracy]]).astype(np.float32)


def smoothed_accuracy(previous: float | None, accuracy: float, smoothing: float) -> float:
    """One step of the exponential moving average ``s_t = α·s_{t-1} + (1 − α)·acc_t`` (α =
    ``smoothing``), started at the first accuracy.

    The agent's reward is ``s_t − s_{t-1}``. Validation noise of variance σ² per round gives the
    raw change (α = 0) a variance of 2σ², this one 2σ²·(1 − α)²/(1 + α) (α = 0.5: a sixth); a
    lasting change of accuracy is credited a fraction (1 − α) at once and the rest over the next
    rounds, which the agent's discounted return still sees.
    """
    if previous is None:
        return float(accuracy)
    return float(smoothing * previous + (1.0 - smoothing) * accuracy)


class Simulator(Protocol):
    num_modalities: int

    def reset(self, seed: int) -> RoundSignals: ...

    def step(self, beta: float) -> RoundSignals: ...


class FlexModEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """The environment; ``simulator=None`` builds the default synthetic :class:`FederationSimulator`
    lazily (only when reset or stepped, so constructing it for its spaces is free)."""

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it a class attribute)

    def __init__(
        self,
        num_modalities: int = 2,
        simulator: Simulator | None = None,
        horizon: int = 20,
        reward_smoothing: float = REWARD_SMOOTHING,
    ) -> None:
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
        if not 0.0 <= reward_smoothing < 1.0:
            raise ValueError(f"reward_smoothing must be in [0, 1), got {reward_smoothing}")
        if simulator is not None and simulator.num_modalities != num_modalities:
            raise ValueError(
                f"the simulator has {simulator.num_modalities} modalities, the environment {num_modalities}"
            )
        self.num_modalities = num_modalities
        self.horizon = horizon
        self.reward_smoothing = reward_smoothing
        self._simulator = simulator
        dim = 2 * num_modalities + 2
        self.observation_space = spaces.Box(0.0, 1.0, shape=(dim,), dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self._t = 0
        self._beta = 0.5
        self._smoothed = 0.0

    @property
    def simulator(self) -> Simulator:
        if self._simulator is None:
            self._simulator = FederationSimulator.synthetic(self.num_modalities)
        return self._simulator

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        sim_seed = int(self.np_random.integers(2**31))
        signals = self.simulator.reset(sim_seed)
        self._t, self._beta, self._smoothed = 0, 0.5, signals.accuracy
        return observation(signals, self._beta), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        beta = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        signals = self.simulator.step(beta)
        smoothed = smoothed_accuracy(self._smoothed, signals.accuracy, self.reward_smoothing)
        reward = smoothed - self._smoothed
        self._t += 1
        self._beta, self._smoothed = beta, smoothed
        truncated = self._t >= self.horizon
        return observation(signals, beta), reward, False, truncated, {"beta": beta}


class FederationSimulator:
    """Runs a real (small) fedmm federation with FlexMod at a β the environment chooses.

    ``build(seed)`` returns ``(model, data)``; the data needs a server validation split.
    """

    def __init__(
        self,
        build: Callable[[int], tuple[Any, Any]],
        num_modalities: int,
        strategy_options: dict[str, Any] | None = None,
        flexmod_options: dict[str, Any] | None = None,
    ) -> None:
        self.build = build
        self.num_modalities = num_modalities
        self.strategy_options = dict(strategy_options or {})
        self.flexmod_options = dict(flexmod_options or {})
        self._fed: Any = None
        self._tech: Any = None

    @classmethod
    def synthetic(cls, num_modalities: int = 2, clients: int = 4) -> FederationSimulator:
        """A two-class-mix synthetic task: modality 0 informative, the others weaker (fast)."""

        def build(seed: int) -> tuple[Any, Any]:
            import torch

            from fedmm.core.api import federate, late_fusion, make_synthetic

            mods = [(f"m{i}", 8, 1.0 if i == 0 else 0.3) for i in range(num_modalities)]
            central = make_synthetic(600, num_classes=4, modalities=mods, seed=seed)
            data = federate(central, clients=clients, partition="iid", validation_fraction=0.2, seed=seed)
            torch.manual_seed(seed)
            model = late_fusion(data.modalities, data.num_classes, embed_dim=16, hidden=16)
            return model, data

        return cls(build, num_modalities, strategy_options={"lr": 0.05, "batch_size": 32})

    def reset(self, seed: int) -> RoundSignals:
        from fedmm.core.api import FedAvg, Federation
        from fedmm.schedule.flexmod.technique import FlexMod

        model, data = self.build(seed)
        self._tech = FlexMod(beta=0.5, **self.flexmod_options)
        self._fed = Federation(
            model, data, FedAvg([self._tech], **self.strategy_options), seed=seed, eval_every=0
        )
        self._fed.run(1, progress=False)  # round 1 is an Entire Update round that measures the signals
        return self._tech.signals()

    def step(self, beta: float) -> RoundSignals:
        if self._fed is None:
            raise RuntimeError("reset the simulator before stepping it")
        self._tech.fixed_beta = beta
        self._fed.run(self._fed.round + 1, progress=False)
        return self._tech.signals()


gymnasium.register(id=ENV_ID, entry_point="fedmm.schedule.flexmod.env:FlexModEnv")
