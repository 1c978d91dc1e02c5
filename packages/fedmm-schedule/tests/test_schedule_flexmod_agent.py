"""FlexMod's β agent: saving and loading its whole state, and whether it can learn at all."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from fedmm.core.errors import ConfigError
from fedmm.schedule.flexmod import BetaAgent, FlexMod, FlexModEnv
from fedmm.schedule.flexmod.agent import METADATA_KEY
from fedmm.schedule.flexmod.env import smoothed_accuracy

DIM = 6  # two modalities


def _drive(agent: BetaAgent, rng: np.random.Generator, decisions: int) -> list[float]:
    """``decisions`` rounds of act (exploring) + observe, on random observations and rewards."""
    betas = []
    obs = rng.uniform(0, 1, DIM).astype(np.float32)
    for _ in range(decisions):
        beta = agent.act(obs)
        nxt = rng.uniform(0, 1, DIM).astype(np.float32)
        agent.observe(obs, beta, float(rng.normal()), nxt)
        betas.append(beta)
        obs = nxt
    return betas


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}"))
        return out
    return {prefix: tree}


def _assert_same_state(a: BetaAgent, b: BetaAgent) -> None:
    sa, sb = _flat(a.state_dict()), _flat(b.state_dict())
    assert set(sa) == set(sb)
    for key in sa:
        if isinstance(sa[key], np.ndarray):
            assert np.array_equal(sa[key], sb[key]), key
        else:
            assert sa[key] == sb[key], key


@pytest.mark.parametrize("before", [3, 14])  # before learning_starts (8); after it, buffer wrapped (10)
def test_a_loaded_agent_explores_and_learns_exactly_as_the_original(tmp_path: Path, before: int) -> None:
    # Was: load restored the policy only, so with exploration on the loaded agent drew uniform
    # random β for learning_starts rounds and trained on an empty replay buffer.
    agent = BetaAgent(DIM, batch_size=4, buffer_size=10, seed=1)
    _drive(agent, np.random.default_rng(0), before)
    path = tmp_path / "agent.safetensors"
    agent.save(path)
    loaded = BetaAgent.load(path)
    _assert_same_state(agent, loaded)
    assert loaded.transitions == before and loaded.decisions == before
    assert loaded.sigma == agent.sigma < 0.1  # the decayed noise level, not the initial one
    # The next decisions, with exploration, and the training updates they trigger are identical.
    original = _drive(agent, np.random.default_rng(1), 6)
    assert _drive(loaded, np.random.default_rng(1), 6) == original
    _assert_same_state(agent, loaded)


def test_a_greedy_query_does_not_change_the_agent() -> None:
    agent = BetaAgent(DIM, learning_starts=2, batch_size=2, seed=0)
    twin = BetaAgent(DIM, learning_starts=2, batch_size=2, seed=0)
    _drive(agent, np.random.default_rng(0), 3)
    _drive(twin, np.random.default_rng(0), 3)
    agent.act(np.full(DIM, 0.5, dtype=np.float32), explore=False)
    assert _drive(agent, np.random.default_rng(1), 3) == _drive(twin, np.random.default_rng(1), 3)


def assert_plain_safetensors(path: Path) -> dict[str, Any]:
    """``path`` is nothing but a safetensors file: a JSON header, then the tensors' raw bytes
    tiling the rest of the file (no room for a pickle), and the agent's JSON metadata."""
    raw = path.read_bytes()
    assert not zipfile.is_zipfile(path)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    meta = header.pop("__metadata__")
    pos = 0
    for start, end in sorted(tuple(entry["data_offsets"]) for entry in header.values()):
        assert start == pos
        pos = end
    assert 8 + size + pos == len(raw)
    assert set(meta) == {METADATA_KEY}
    saved: dict[str, Any] = json.loads(meta[METADATA_KEY])
    return saved


def test_a_saved_agent_is_safetensors_and_json_only(tmp_path: Path) -> None:
    agent = BetaAgent(DIM, learning_starts=2, batch_size=2, seed=3, net_arch=(8, 8))
    _drive(agent, np.random.default_rng(0), 4)
    agent.save(tmp_path / "agent.safetensors")
    saved = assert_plain_safetensors(tmp_path / "agent.safetensors")
    assert saved["observation_dim"] == DIM and saved["options"]["net_arch"] == [8, 8]
    assert saved["seed"] == 3


def test_agent_pretrains_offline_on_the_simulated_federation(tmp_path: Path) -> None:
    agent = BetaAgent(DIM, learning_starts=4, batch_size=4, seed=0)
    before = {k: v.copy() for k, v in agent.state_dict()["policy"].items()}
    agent.pretrain(FlexModEnv(num_modalities=2, horizon=5), steps=8)
    after = agent.state_dict()["policy"]
    assert agent.transitions >= 8
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # DDPG.learn updated it
    path = tmp_path / "pretrained.safetensors"
    agent.save(path)
    # Was: SB3's zip, with cloudpickled entries (_last_obs, ep_info_buffer) after learn.
    assert_plain_safetensors(path)
    # A federation starts from the pre-trained agent's whole state: it acts with its actor from
    # the first round (it was random for learning_starts rounds) and keeps its replay buffer.
    tech = FlexMod(agent_path=str(path))
    online = tech.agent(2)
    assert online.transitions == agent.transitions
    loaded = online.state_dict()
    assert set(loaded["policy"]) == set(after)
    assert all(np.array_equal(after[k], loaded["policy"][k]) for k in after)
    assert np.array_equal(loaded["buffer"]["rewards"], agent.state_dict()["buffer"]["rewards"])
    obs = np.full(DIM, 0.5, dtype=np.float32)
    assert online.act(obs) == agent.act(obs)


def test_load_takes_the_saved_settings_and_overrides_the_adjustable_ones(tmp_path: Path) -> None:
    agent = BetaAgent(DIM, learning_starts=2, batch_size=2, seed=3, net_arch=(8, 8), noise=0.3)
    _drive(agent, np.random.default_rng(0), 4)
    agent.save(tmp_path / "agent.safetensors")
    loaded = BetaAgent.load(tmp_path / "agent.safetensors", DIM, learning_rate=1e-4, noise=0.05, seed=7)
    assert loaded.options["net_arch"] == (8, 8) and loaded.options["batch_size"] == 2
    assert loaded.options["learning_rate"] == 1e-4 and loaded.seed == 7
    assert loaded.sigma == 0.05  # an explicit noise restarts exploration at that σ
    assert loaded.transitions == 4


def _rewrite(path: Path, change: Callable[[dict[str, np.ndarray], dict[str, Any]], None]) -> None:
    arrays = load_file(str(path))
    with safe_open(str(path), framework="np") as fh:
        meta = json.loads(fh.metadata()[METADATA_KEY])
    change(arrays, meta)
    save_file(arrays, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not an agent at all")


def _sb3_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", "{}")


def _no_metadata(path: Path) -> None:
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(path))


def _future_format(path: Path) -> None:
    _rewrite(path, lambda arrays, meta: meta.update(format="fedmm.BetaAgent/99"))


def _missing_tensor(path: Path) -> None:
    _rewrite(path, lambda arrays, meta: arrays.pop(next(k for k in arrays if "critic_target" in k)))


def _wrong_shape(path: Path) -> None:
    def change(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        key = next(k for k in arrays if k.endswith("actor.mu.0.weight"))
        arrays[key] = np.zeros((3, 3), dtype=np.float32)

    _rewrite(path, change)


@pytest.mark.parametrize(
    ("spoil", "load_kwargs", "problem"),
    [
        (_garbage, {}, "is not a safetensors file"),
        (_sb3_zip, {}, "is a stable-baselines3 zip"),
        (_no_metadata, {}, "holds no BetaAgent"),
        (_future_format, {}, "format 'fedmm.BetaAgent/99'"),
        (_missing_tensor, {}, "lacks the tensor"),
        (_wrong_shape, {}, "has shape (3, 3)"),
        (None, {"observation_dim": 8}, "observation_dim 6 (2 modalities), not 8 (3 modalities)"),
        (None, {"net_arch": (16,)}, "net_arch (8, 8), not (16,)"),
        (None, {"buffer_size": 50}, "buffer_size 100, not 50"),
    ],
)
def test_a_malformed_or_mismatched_saved_agent_is_one_clear_error(
    tmp_path: Path, spoil: Callable[[Path], None] | None, load_kwargs: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "agent.safetensors"
    agent = BetaAgent(DIM, learning_starts=2, batch_size=2, buffer_size=100, net_arch=(8, 8))
    _drive(agent, np.random.default_rng(0), 3)
    agent.save(path)
    if spoil is not None:
        spoil(path)
    with pytest.raises(ConfigError) as info:
        BetaAgent.load(path, **load_kwargs)
    message = str(info.value)
    assert str(path) in message and problem in message, message
    assert "BetaAgent.save" in message  # and how to get a good one


# -- can it learn? -------------------------------------------------------------------------------
TOY_DECISIONS = 100  # each with 4 gradient steps (the defaults): ~3 s on one loaded CPU core


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny networks: torch's thread pool only adds contention on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("peak", [0.2, 0.8])
@pytest.mark.usefixtures("one_thread")
def test_the_agent_finds_the_peak_of_a_toy_reward(peak: float) -> None:
    # A one-step toy problem: constant observation, reward -(β - β*)², so the best β is β*. Two
    # peaks, so that an agent stuck at a corner (or at 0.5) fails one of them. Default options.
    agent = BetaAgent(DIM, seed=0)
    obs = np.full(DIM, 0.5, dtype=np.float32)
    for _ in range(TOY_DECISIONS):
        beta = agent.act(obs)
        agent.observe(obs, beta, -((beta - peak) ** 2), obs)
    assert agent.act(obs, explore=False) == pytest.approx(peak, abs=0.1)


def test_smoothed_accuracy_is_an_exponential_moving_average() -> None:
    assert smoothed_accuracy(None, 0.4, 0.5) == 0.4  # starts at the first accuracy
    assert smoothed_accuracy(0.4, 0.6, 0.5) == pytest.approx(0.5)
    assert smoothed_accuracy(0.4, 0.6, 0.0) == 0.6  # 0: the raw accuracy, so the raw change


def test_flexmod_refuses_a_bad_agent_file_when_built(tmp_path: Path) -> None:
    # Was: only "is it a file", then the bad file surfaced after FlexMod's first round of training.
    path = tmp_path / "agent.zip"
    _sb3_zip(path)
    with pytest.raises(ConfigError, match=r"^flexmod: agent_path '.*agent.zip' is a stable-baselines3 zip"):
        FlexMod(agent_path=str(path))
