"""The β agent: stable-baselines3 DDPG driven one federated round at a time.

FlexMod makes one decision per round (the weighting β between importance and training need), and
the federation, not the agent, owns the loop. So instead of ``DDPG.learn`` stepping an
environment, :class:`BetaAgent` uses SB3's DDPG piece by piece — its actor for the action, its
replay buffer for transitions, its ``train`` for gradient steps — with the observation and
action spaces of :class:`~fedmm.schedule.flexmod.env.FlexModEnv`. The same agent can be
pre-trained offline with ``DDPG.learn`` on that environment (a simulated federation) and then
keep learning online (:meth:`BetaAgent.pretrain`).

Exploration: Gaussian noise on β (σ = ``noise``, × ``noise_decay`` per decision, clipped to
[0, 1]); before ``learning_starts`` transitions the action is uniform in [0, 1]. Every random draw
comes from the agent's own seeded generators, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedmm.core.api import ArgumentError, integer, known_keys, number

__all__ = ["AGENT_OPTIONS", "BetaAgent", "check_agent_options"]

# The keyword options of BetaAgent that a config may set (FlexMod's ``agent`` table).
AGENT_OPTIONS = (
    "learning_starts",
    "batch_size",
    "buffer_size",
    "gamma",
    "tau",
    "learning_rate",
    "net_arch",
    "noise",
    "noise_decay",
    "gradient_steps",
)


def check_agent_options(owner: str, options: Any) -> dict[str, Any]:
    """``options`` for :class:`BetaAgent`, checked (names, types, ranges) without building it.

    Errors name the option as ``agent.<name>`` (FlexMod's ``agent`` table), so a misspelt option
    is refused when FlexMod is built, not when its agent first acts after a round of training.
    """
    if isinstance(options, Mapping) and "seed" in options:
        raise ArgumentError(
            owner, "agent.seed", "is not an agent option: the agent takes the technique's seed"
        )
    opts = known_keys(owner, "agent", options, AGENT_OPTIONS)
    ints = {"learning_starts": 0, "batch_size": 1, "buffer_size": 1, "gradient_steps": 0}
    for name, low in ints.items():
        if name in opts:
            opts[name] = integer(owner, f"agent.{name}", opts[name], low=low)
    ranges: dict[str, dict[str, Any]] = {
        "gamma": {"low": 0, "high": 1},
        "tau": {"low": 0, "high": 1, "low_open": True},
        "learning_rate": {"low": 0, "low_open": True},
        "noise": {"low": 0},
        "noise_decay": {"low": 0, "high": 1, "low_open": True},
    }
    for name, bounds in ranges.items():
        if name in opts:
            opts[name] = number(owner, f"agent.{name}", opts[name], **bounds)
    if "net_arch" in opts:
        arch = opts["net_arch"]
        if isinstance(arch, str) or not isinstance(arch, Sequence):
            raise ArgumentError(owner, "agent.net_arch", f"must be a list of layer widths, got {arch!r}")
        opts["net_arch"] = tuple(integer(owner, "agent.net_arch", w, low=1) for w in arch)
    return opts


class BetaAgent:
    """DDPG over ``observation_dim``-dimensional observations and a scalar action β ∈ [0, 1].

    Args:
        observation_dim: ``2M + 2`` for ``M`` modalities (see ``FlexModEnv``).
        learning_starts: transitions collected before the first gradient step (and before the
            actor replaces uniform random actions).
        batch_size, buffer_size, gamma, tau, learning_rate, net_arch: DDPG settings (spec §3.4;
            SB3 uses one learning rate for actor and critic).
        noise, noise_decay: exploration σ on β and its decay per decision.
        gradient_steps: DDPG updates per federated round.
        seed: seeds the networks, the replay sampling and the exploration noise.
    """

    def __init__(
        self,
        observation_dim: int,
        *,
        learning_starts: int = 8,
        batch_size: int = 32,
        buffer_size: int = 1000,
        gamma: float = 0.9,
        tau: float = 0.01,
        learning_rate: float = 1e-3,
        net_arch: tuple[int, ...] = (64, 64),
        noise: float = 0.1,
        noise_decay: float = 0.99,
        gradient_steps: int = 4,
        seed: int = 0,
    ) -> None:
        from stable_baselines3 import DDPG
        from stable_baselines3.common.logger import configure

        from fedmm.schedule.flexmod.env import FlexModEnv

        check_agent_options(
            "BetaAgent",
            {
                "learning_starts": learning_starts,
                "batch_size": batch_size,
                "buffer_size": buffer_size,
                "gamma": gamma,
                "tau": tau,
                "learning_rate": learning_rate,
                "net_arch": net_arch,
                "noise": noise,
                "noise_decay": noise_decay,
                "gradient_steps": gradient_steps,
            },
        )

        self.env = FlexModEnv(num_modalities=(observation_dim - 2) // 2)
        self.model = DDPG(
            "MlpPolicy",
            self.env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            policy_kwargs={"net_arch": list(net_arch)},
            seed=seed,
            device="cpu",
        )
        self.model.set_logger(configure(None, []))
        self.learning_starts = learning_starts
        self.batch_size = batch_size
        self.gradient_steps = gradient_steps
        self.sigma = noise
        self.noise_decay = noise_decay
        self.seed = seed
        self.decisions = 0
        self.transitions = 0

    # -- acting and learning --------------------------------------------------------------------
    def _rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.decisions, salt])

    def act(self, observation: np.ndarray, explore: bool = True) -> float:
        """β for ``observation``: the actor's output plus exploration noise (uniform before learning)."""
        obs = np.asarray(observation, dtype=np.float32)
        rng = self._rng(1)
        if explore and self.transitions < self.learning_starts:
            beta = float(rng.uniform(0.0, 1.0))
        else:
            action, _ = self.model.predict(obs, deterministic=True)
            beta = float(np.asarray(action).reshape(-1)[0])
            if explore:
                beta += float(rng.normal(0.0, self.sigma))
        if explore:
            self.sigma *= self.noise_decay
        self.decisions += 1
        return float(np.clip(beta, 0.0, 1.0))

    def observe(
        self, observation: np.ndarray, beta: float, reward: float, next_observation: np.ndarray
    ) -> None:
        """Store one transition (never terminal: a federation has no natural end) and train."""
        scaled = np.array([[2.0 * beta - 1.0]], dtype=np.float32)  # SB3 stores actions in [-1, 1]
        self.model.replay_buffer.add(  # type: ignore[union-attr]
            np.asarray(observation, dtype=np.float32)[None],
            np.asarray(next_observation, dtype=np.float32)[None],
            scaled,
            np.array([reward], dtype=np.float32),
            np.array([False]),
            [{}],
        )
        self.transitions += 1
        if self.transitions >= self.learning_starts:
            # SB3 samples the replay buffer with numpy's global generator: seed it from ours.
            state = np.random.get_state()
            np.random.seed(int(self._rng(2).integers(2**31)))
            try:
                self.model.train(gradient_steps=self.gradient_steps, batch_size=self.batch_size)
            finally:
                np.random.set_state(state)

    def pretrain(self, env: Any, steps: int, progress: bool = False) -> None:
        """Offline pre-training with SB3's own ``learn`` on an environment (e.g. a simulated federation)."""
        from stable_baselines3.common.logger import configure

        self.model.set_env(env)
        self.model.learn(total_timesteps=steps, progress_bar=progress, reset_num_timesteps=False)
        self.transitions = max(self.transitions, int(self.model.replay_buffer.size()))  # type: ignore[union-attr]
        self.model.set_logger(configure(None, []))

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """SB3's own format (a zip: parameters as PyTorch state dicts, settings as JSON)."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | Path, observation_dim: int, **kwargs: Any) -> BetaAgent:
        """Load an agent saved with :meth:`save` (SB3's ``DDPG.load``).

        The spaces, policy class and schedules are passed in rather than read back, so SB3 does not
        unpickle them; load only agent files you produced yourself.
        """
        from stable_baselines3 import DDPG

        agent = cls(observation_dim, **kwargs)
        custom = {
            "observation_space": agent.env.observation_space,
            "action_space": agent.env.action_space,
            "policy_class": type(agent.model.policy),
            "lr_schedule": agent.model.lr_schedule,
            "learning_rate": agent.model.learning_rate,
            "replay_buffer_class": type(agent.model.replay_buffer),
            "replay_buffer_kwargs": {},
            "action_noise": None,
            "train_freq": agent.model.train_freq,
        }
        loaded = DDPG.load(path, env=agent.env, device="cpu", custom_objects=custom)
        agent.model.policy.load_state_dict(loaded.policy.state_dict())
        return agent

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as numpy arrays and plain values (for checkpoints)."""
        buf = self.model.replay_buffer
        assert buf is not None
        n = buf.buffer_size if buf.full else buf.pos
        return {
            "policy": {k: v.detach().cpu().numpy().copy() for k, v in self.model.policy.state_dict().items()},
            "actor_optimizer": _optimizer_state(self.model.actor.optimizer),
            "critic_optimizer": _optimizer_state(self.model.critic.optimizer),
            "buffer": {
                "observations": buf.observations[:n].copy(),
                "next_observations": buf.next_observations[:n].copy(),
                "actions": buf.actions[:n].copy(),
                "rewards": buf.rewards[:n].copy(),
                "pos": int(buf.pos),
                "full": bool(buf.full),
            },
            "n_updates": int(self.model._n_updates),
            "sigma": float(self.sigma),
            "decisions": int(self.decisions),
            "transitions": int(self.transitions),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.policy.load_state_dict(
            {k: torch.as_tensor(np.asarray(v)) for k, v in state["policy"].items()}
        )
        _load_optimizer_state(self.model.actor.optimizer, state["actor_optimizer"])
        _load_optimizer_state(self.model.critic.optimizer, state["critic_optimizer"])
        buf = self.model.replay_buffer
        assert buf is not None
        b = state["buffer"]
        n = np.asarray(b["observations"]).shape[0]
        buf.observations[:n] = np.asarray(b["observations"])
        buf.next_observations[:n] = np.asarray(b["next_observations"])
        buf.actions[:n] = np.asarray(b["actions"])
        buf.rewards[:n] = np.asarray(b["rewards"])
        buf.dones[:n] = 0
        buf.pos, buf.full = int(b["pos"]), bool(b["full"])
        self.model._n_updates = int(state["n_updates"])
        self.sigma = float(state["sigma"])
        self.decisions = int(state["decisions"])
        self.transitions = int(state["transitions"])


def _optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    sd = opt.state_dict()
    return {
        "state": {
            str(i): {k: (v.detach().cpu().numpy().copy() if torch.is_tensor(v) else v) for k, v in s.items()}
            for i, s in sd["state"].items()
        }
    }


def _load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    sd = opt.state_dict()
    sd["state"] = {
        int(i): {k: torch.as_tensor(np.asarray(v)) for k, v in s.items()} for i, s in state["state"].items()
    }
    opt.load_state_dict(sd)
