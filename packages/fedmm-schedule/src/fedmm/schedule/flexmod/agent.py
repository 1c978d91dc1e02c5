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
comes from the agent's own generators, derived from (seed, decision count), so a run is
reproducible and those two numbers restore them.

Persistence: :meth:`BetaAgent.save` writes the agent's whole state (actor, critic, their targets,
both optimisers, the replay buffer, counters, σ) as one safetensors file whose JSON metadata holds
the settings and scalars; :meth:`BetaAgent.load` reads it back without unpickling anything, so a
loaded agent acts and learns exactly as the saved one would have.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fedmm.core.api import ArgumentError, ConfigError, contiguous, integer, known_keys, number

__all__ = ["AGENT_OPTIONS", "FORMAT", "METADATA_KEY", "BetaAgent", "check_agent_options", "read_saved_agent"]

# A saved agent: one safetensors file, its settings and scalars as JSON under this metadata key.
METADATA_KEY = "fedmm.beta_agent"
FORMAT = "fedmm.BetaAgent/1"
ARRAY_TAG = "__tensor__"
# Options that shape the saved tensors: a loaded agent must have the saved ones.
FIXED_OPTIONS = ("net_arch", "buffer_size")

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

        dim = integer("BetaAgent", "observation_dim", observation_dim, low=4)
        if dim % 2:
            raise ArgumentError(
                "BetaAgent", "observation_dim", f"must be 2 × modalities + 2 (even), got {observation_dim}"
            )
        self.observation_dim = dim
        # The checked settings, as save writes them and load passes them back.
        self.options: dict[str, Any] = check_agent_options(
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
        self.seed = integer("BetaAgent", "seed", seed, low=0)

        self.env = FlexModEnv(num_modalities=(dim - 2) // 2)
        # A small host-side network: built on the CPU whatever torch's default device is.
        with torch.device("cpu"):
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
        self.decisions = 0
        self.transitions = 0

    # -- acting and learning --------------------------------------------------------------------
    def _rng(self, salt: int) -> np.random.Generator:
        # Counter-based: (seed, decisions) is the whole state of the agent's generators.
        return np.random.default_rng([self.seed, self.decisions, salt])

    def _greedy(self, obs: np.ndarray) -> float:
        action, _ = self.model.predict(obs, deterministic=True)
        return float(np.asarray(action).reshape(-1)[0])

    def act(self, observation: np.ndarray, explore: bool = True) -> float:
        """β for ``observation``: the actor's output plus exploration noise (uniform before learning).

        ``explore=False`` is a query: the actor's β, and the agent is left unchanged.
        """
        obs = np.asarray(observation, dtype=np.float32)
        if not explore:
            return float(np.clip(self._greedy(obs), 0.0, 1.0))
        rng = self._rng(1)
        if self.transitions < self.learning_starts:
            beta = float(rng.uniform(0.0, 1.0))
        else:
            beta = self._greedy(obs) + float(rng.normal(0.0, self.sigma))
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
        from stable_baselines3.common.noise import NormalActionNoise

        self.model.set_env(env)
        # Without action noise SB3's DDPG explores only before learning_starts; use the agent's σ
        # (SB3 acts in [-1, 1], twice β's range).
        self.model.action_noise = NormalActionNoise(np.zeros(1), np.full(1, 2.0 * self.sigma))
        try:
            self.model.learn(total_timesteps=steps, progress_bar=progress, reset_num_timesteps=False)
        finally:
            self.model.action_noise = None
        self.transitions = max(self.transitions, int(self.model.replay_buffer.size()))  # type: ignore[union-attr]
        self.model.set_logger(configure(None, []))

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the whole agent to ``path``: one safetensors file (tensors of :meth:`state_dict`)
        with the settings and scalars as JSON metadata. Nothing in it is pickled."""
        arrays: dict[str, np.ndarray] = {}
        saved = {
            "format": FORMAT,
            "observation_dim": self.observation_dim,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
            "seed": self.seed,
            "state": _split(self.state_dict(), "", arrays),
        }
        target = Path(path).expanduser()
        tmp = target.with_name(target.name + ".tmp")
        save_file(arrays, str(tmp), metadata={METADATA_KEY: json.dumps(saved)})
        os.replace(tmp, target)  # a reader never sees half a file

    @classmethod
    def load(cls, path: str | Path, observation_dim: int | None = None, **options: Any) -> BetaAgent:
        """The agent saved at ``path`` by :meth:`save`, whole: it acts and learns as the saved one.

        ``observation_dim`` (``2M + 2``), when given, must be the saved one. ``options`` override
        the saved settings from the next decision on, except ``net_arch`` and ``buffer_size``,
        which must match the saved tensors; ``noise`` restarts exploration at that σ (otherwise
        the saved, decayed σ goes on) and ``seed`` re-seeds the agent's generators.
        """
        saved, state = read_saved_agent(path)
        dim = int(saved["observation_dim"])
        if observation_dim is not None and observation_dim != dim:
            raise _saved_agent_error(
                path,
                f"holds an agent for observation_dim {dim} ({(dim - 2) // 2} modalities), not "
                f"{observation_dim} ({(observation_dim - 2) // 2} modalities)",
            )
        seed = options.pop("seed", saved["seed"])
        given = check_agent_options("BetaAgent.load", options)
        kept = check_agent_options("BetaAgent.load", saved["options"])
        for name in FIXED_OPTIONS:
            if name in given and given[name] != kept[name]:
                raise _saved_agent_error(
                    path, f"was saved with {name} {kept[name]!r}, not {given[name]!r}: omit {name}"
                )
        agent = cls(dim, seed=seed, **{**kept, **given})
        problem = agent._state_problem(state)
        if problem is not None:
            raise _saved_agent_error(path, problem)
        agent.load_state_dict(state)
        if "noise" in given:
            agent.sigma = float(given["noise"])
        return agent

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as numpy arrays and plain values (for checkpoints):
        the policy (actor, critic and their targets), both optimisers, the replay buffer, the
        counters and σ. With the seed and the settings it is the whole agent."""
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
                # Both only set by pretrain's episodes (a time limit); observe adds neither.
                "dones": buf.dones[:n].copy(),
                "timeouts": buf.timeouts[:n].copy(),
                "pos": int(buf.pos),
                "full": bool(buf.full),
            },
            "n_updates": int(self.model._n_updates),
            "sigma": float(self.sigma),
            "decisions": int(self.decisions),
            "transitions": int(self.transitions),
        }

    def _state_problem(self, state: Any) -> str | None:
        """What makes ``state`` unfit for this agent (a :meth:`state_dict`), or None."""
        expected = self.state_dict()
        if not isinstance(state, Mapping):
            return "holds no agent state (not a table)"
        missing = [k for k in expected if k not in state]
        if missing:
            return f"lacks the agent state {', '.join(missing)}"
        ours = {k: tuple(v.shape) for k, v in expected["policy"].items()}
        theirs = state["policy"]
        if not isinstance(theirs, Mapping) or set(theirs) != set(ours):
            return "holds a policy with other networks than a DDPG MlpPolicy's"
        for key, shape in ours.items():
            got = tuple(np.shape(theirs[key]))
            if got != shape:
                return f"{'policy/' + key!r} has shape {got}, the agent's has {shape}"
        for name in ("actor_optimizer", "critic_optimizer"):
            opt = state[name]
            if not isinstance(opt, Mapping) or not isinstance(opt.get("state"), Mapping):
                return f"holds no {name} state"
        buf = state["buffer"]
        capacity = self.model.replay_buffer.buffer_size  # type: ignore[union-attr]
        rows = None
        for key in ("observations", "next_observations", "actions", "rewards"):
            if not isinstance(buf, Mapping) or key not in buf:
                return f"lacks the replay buffer's {key}"
            got = tuple(np.shape(buf[key]))
            want = expected["buffer"][key].shape[1:]
            if got[1:] != want or got[0] > capacity or (rows is not None and got[0] != rows):
                return f"holds a replay buffer {key} of shape {got}, not (rows <= {capacity}, *{want})"
            rows = got[0]
        if not isinstance(buf.get("pos"), int) or not isinstance(buf.get("full"), bool):
            return "lacks the replay buffer's position (pos, full)"
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        problem = self._state_problem(state)
        if problem is not None:
            raise ConfigError(f"BetaAgent.load_state_dict: the state {problem}")
        self.model.policy.load_state_dict({k: _tensor(v) for k, v in state["policy"].items()})
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
        # Checkpoints written before dones and timeouts were saved: observe never sets them.
        buf.dones[:n] = np.asarray(b["dones"]) if "dones" in b else 0
        buf.timeouts[:n] = np.asarray(b["timeouts"]) if "timeouts" in b else 0
        buf.pos, buf.full = int(b["pos"]), bool(b["full"])
        self.model._n_updates = int(state["n_updates"])
        self.sigma = float(state["sigma"])
        self.decisions = int(state["decisions"])
        self.transitions = int(state["transitions"])


def _saved_agent_error(path: str | Path, problem: str) -> ConfigError:
    return ConfigError(
        f"{str(path)!r} {problem}; give a file written by BetaAgent.save (e.g. after BetaAgent.pretrain)"
    )


def read_saved_agent(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(settings, state)`` of an agent file written by :meth:`BetaAgent.save`, read without
    unpickling; a :class:`ConfigError` naming the file and what is wrong with it otherwise."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise _saved_agent_error(path, "is not a file")
    try:
        with open(file, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise _saved_agent_error(path, f"cannot be read ({exc.strerror})") from None
    if magic == b"PK\x03\x04":
        raise _saved_agent_error(
            path,
            "is a stable-baselines3 zip (the format BetaAgent.save wrote before), which only "
            "unpickling can read fully; it is not read: pre-train and save the agent again",
        )
    try:
        with safe_open(str(file), framework="np") as fh:
            meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open: no __iter__)
    except (SafetensorError, OSError) as exc:
        raise _saved_agent_error(path, f"is not a safetensors file ({exc})") from None
    if METADATA_KEY not in meta:
        raise _saved_agent_error(path, f"holds no BetaAgent (no {METADATA_KEY!r} metadata)")
    try:
        saved = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        raise _saved_agent_error(path, f"holds {METADATA_KEY!r} metadata that is not JSON") from None
    fmt = saved.get("format") if isinstance(saved, dict) else None
    if fmt != FORMAT:
        raise _saved_agent_error(path, f"is in format {fmt!r}, this version reads {FORMAT!r}")
    for key, kind in (("observation_dim", int), ("seed", int), ("options", dict), ("state", dict)):
        if not isinstance(saved.get(key), kind) or isinstance(saved.get(key), bool):
            raise _saved_agent_error(path, f"holds no valid {key!r} ({kind.__name__})")
    try:
        check_agent_options("BetaAgent", saved["options"])
    except ConfigError as exc:
        raise _saved_agent_error(path, f"holds bad settings ({exc})") from None
    try:
        state = _join(saved["state"], arrays)
    except KeyError as exc:
        raise _saved_agent_error(path, f"lacks the tensor {exc.args[0]!r}") from None
    return saved, state


def _split(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """``tree`` with every array replaced by a reference to its entry in ``arrays`` (JSON-able)."""
    if isinstance(tree, np.ndarray):
        arrays[prefix] = contiguous(tree)
        return {ARRAY_TAG: prefix}
    if isinstance(tree, Mapping):
        return {str(k): _split(v, f"{prefix}/{k}" if prefix else str(k), arrays) for k, v in tree.items()}
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _join(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {ARRAY_TAG}:
            return arrays[tree[ARRAY_TAG]]
        return {k: _join(v, arrays) for k, v in tree.items()}
    return tree


def _tensor(value: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(value))  # a copy: arrays read from a file may be read-only


def _optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    sd = opt.state_dict()
    return {
        "state": {
            str(i): {k: (v.detach().cpu().numpy().copy() if torch.is_tensor(v) else v) for k, v in s.items()}
            for i, s in sd["state"].items()
        }
    }


def _load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    # The parameter groups (learning rate) are the agent's own; only the per-parameter state loads.
    sd = opt.state_dict()
    sd["state"] = {int(i): {k: _tensor(v) for k, v in s.items()} for i, s in state["state"].items()}
    opt.load_state_dict(sd)
