"""FlexMod in a federation, its gymnasium environment and its DDPG agent."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from fedmm.core import FedAvg, Federation, TrainPlan, datasets
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ArgumentError, ConfigError
from fedmm.core.models import MultimodalModel, late_fusion
from fedmm.schedule.baselines import EntireUpdate, PartialUpdate
from fedmm.schedule.flexmod import ENV_ID, BetaAgent, FlexMod, FlexModEnv
from fedmm.schedule.flexmod.signals import coalition_accuracy, importance


@pytest.fixture(scope="module")
def data() -> FederatedDataset:
    return datasets.load(
        "synthetic",
        clients=4,
        partition="iid",
        num_samples=600,
        test_samples=200,
        validation_fraction=0.2,
        seed=0,
    )


def _model(data: FederatedDataset) -> MultimodalModel:
    torch.manual_seed(0)
    return late_fusion(
        data.modalities, data.num_classes, embed_dim=16, hidden=16, encoders={"a": "mlp", "b": "mlp"}
    )


def _fed(data: FederatedDataset, tech: Any) -> Federation:
    return Federation(_model(data), data, FedAvg([tech], lr=0.1, momentum=0.5), seed=0)


def test_environment_passes_check_env_and_is_registered() -> None:
    env = FlexModEnv(num_modalities=2)
    check_env(env, skip_render_check=True)
    made = gymnasium.make(ENV_ID)
    obs, _ = made.reset(seed=0)
    assert made.observation_space.contains(obs)
    obs, reward, terminated, _truncated, info = made.step(np.array([0.3], dtype=np.float32))
    assert np.isfinite(reward) and not terminated and info["beta"] == pytest.approx(0.3)


def test_flexmod_logs_its_signals_and_trains_combinations_largest_first(data: FederatedDataset) -> None:
    tech = FlexMod(agent={"learning_starts": 2, "batch_size": 2})
    fed = _fed(data, tech)
    history = fed.run(4, progress=False)
    last = history.rounds[-1]
    for key in (
        "flexmod/beta",
        "flexmod/importance/a",
        "flexmod/quality/b",
        "flexmod/need/a",
        "flexmod/reward",
    ):
        assert np.isfinite(last[key]), key
    assert 0.0 <= last["flexmod/beta"] <= 1.0
    # The reward is the change of the exponentially smoothed validation accuracy (default 0.5).
    smooth = [history.rounds[0]["flexmod/val_accuracy"]]
    for r in history.rounds[1:]:
        smooth.append(0.5 * smooth[-1] + 0.5 * r["flexmod/val_accuracy"])
        assert r["flexmod/reward"] == pytest.approx(smooth[-1] - smooth[-2])
    assert any(k.startswith("flexmod/iterations/") for k in last)
    # The plan's combinations run in descending cardinality.
    plan = tech.configure(fed.context(5), 0, TrainPlan())
    sizes = [len(c.modalities or ()) for c in plan.combinations]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 2
    # The ledger shows where each client's FLOPs went, per combination, within the budget.
    rec = next(r for r in history.ledger.records if r.round == 4)
    assert sum(rec.flops_by_combination.values()) == rec.flops
    assert set(rec.flops_by_combination) <= {"a+b", "a", "b"}


def test_fixed_beta_extremes_drive_the_allocation(data: FederatedDataset) -> None:
    per_beta = {}
    for beta in (0.0, 1.0):
        tech = FlexMod(beta=beta)
        # Five local epochs: ~20 iterations per client, room for β to move some.
        fed = Federation(_model(data), data, FedAvg([tech], lr=0.1, momentum=0.5, local_epochs=5), seed=0)
        fed.run(2, progress=False)
        plan = TrainPlan(local_epochs=5)
        combos, factors, costs, steps, budget = tech.allocation(fed.context(3), 0, plan)
        assert float(costs @ steps) <= budget
        sig = tech.signals()
        weights = sig.importance if beta == 1.0 else sig.need
        expected = [sum(weights[["a", "b"].index(m)] for m in s) for s in combos]
        assert factors == pytest.approx(expected)
        per_beta[beta] = dict(zip(combos, steps.tolist(), strict=True))
    # Modality a matters more (importance), b needs more training (need): β moves single steps.
    assert sig.importance[0] > sig.importance[1] and sig.need[1] > sig.need[0]
    assert per_beta[1.0][("a",)] >= per_beta[0.0][("a",)] + 4
    assert per_beta[0.0][("b",)] >= per_beta[1.0][("b",)] + 4


def test_same_budget_for_all_three_schedules(data: FederatedDataset) -> None:
    totals = {}
    for tech in (EntireUpdate(budget=0.5), PartialUpdate(budget=0.5), FlexMod(beta=0.5, budget=0.5)):
        history = _fed(data, tech).run(3, progress=False)
        totals[tech.name] = sum(r.flops for r in history.ledger.records if r.round > 1)
    full = _fed(data, EntireUpdate(budget=1.0)).run(3, progress=False)
    full_flops = sum(r.flops for r in full.ledger.records if r.round > 1)
    for name, flops in totals.items():
        # Within the budget: whole steps of full batches (an epoch ends on a smaller one).
        assert flops <= 0.5 * full_flops * 1.1, name


def test_importance_is_exact_shapley_on_validation(data: FederatedDataset) -> None:
    fed = _fed(data, EntireUpdate())
    fed.run(3, progress=False)
    model = fed.model_with(fed.global_arrays)
    phi, phi_hat, acc = importance(model, data.validation, ["a", "b"])
    empty = coalition_accuracy(model, data.validation, [])
    assert sum(phi.values()) == pytest.approx(acc - empty, abs=1e-9)  # Shapley efficiency
    assert sum(phi_hat.values()) == pytest.approx(1.0)


def test_flexmod_resumes_exactly_with_its_agent(tmp_path: Path, data: FederatedDataset) -> None:
    opts = {"learning_starts": 2, "batch_size": 2}
    full = _fed(data, FlexMod(agent=opts))
    full.run(5, progress=False)
    part = _fed(data, FlexMod(agent=opts))
    part.run(3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)
    resumed = _fed(data, FlexMod(agent=opts))
    history = resumed.run(5, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert [r["flexmod/beta"] for r in history.rounds] == [r["flexmod/beta"] for r in full.history.rounds]
    for g, arrays in full.global_arrays.items():
        assert all(np.array_equal(arrays[k], resumed.global_arrays[g][k]) for k in arrays)


def test_agent_round_trips_through_save_load_and_state_dict(tmp_path: Path) -> None:
    agent = BetaAgent(6, learning_starts=2, batch_size=2, seed=1)
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, 6).astype(np.float32)
    for _ in range(4):
        nxt = rng.uniform(0, 1, 6).astype(np.float32)
        agent.observe(obs, agent.act(obs), float(rng.normal()), nxt)
        obs = nxt
    agent.save(tmp_path / "agent.safetensors")
    loaded = BetaAgent.load(tmp_path / "agent.safetensors", 6, seed=1)
    probe = rng.uniform(0, 1, (5, 6)).astype(np.float32)
    assert all(agent.act(p, explore=False) == loaded.act(p, explore=False) for p in probe)
    again = BetaAgent(6, seed=2)
    again.load_state_dict(copy.deepcopy(agent.state_dict()))
    assert all(agent.act(p, explore=False) == again.act(p, explore=False) for p in probe)
    # Exploring too (full state: replay buffer, counters, noise; see test_schedule_flexmod_agent).
    assert agent.act(probe[0]) == loaded.act(probe[0])


def test_bad_parameters_and_missing_validation_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"beta must be a finite number in \[0, 1\], got 2.0"):
        FlexMod(beta=2.0)
    with pytest.raises(ConfigError, match="budget must be a finite number > 0, got 0"):
        FlexMod(budget=0)
    no_val = datasets.load("synthetic", clients=2, partition="iid", num_samples=200, seed=0)
    with pytest.raises(ConfigError, match="validation split"):
        _fed(no_val, FlexMod()).run(1, progress=False)


@pytest.mark.parametrize(
    ("entry", "cls", "options"),
    [
        ("flexmod", FlexMod, {"budget": 0.8, "beta": 0.3, "agent": {"noise": 0.2}}),
        ("entire_update", EntireUpdate, {"budget": 0.8}),
        ("partial_update", PartialUpdate, {"budget": 0.8, "seed": 3}),
    ],
)
def test_built_from_toml_sections(entry: str, cls: type, options: dict[str, Any]) -> None:
    import json

    from fedmm.core.config import build_technique, parse_config

    raw = {"data": {"name": "synthetic"}, "techniques": [{"name": entry, **options}]}
    tech = build_technique(parse_config(raw).techniques[0])
    assert isinstance(tech, cls) and tech.args.budget == 0.8
    cfg = tech.config()
    json.dumps(cfg)
    assert cls(**cfg).config() == cfg
    typo = {"data": {"name": "synthetic"}, "techniques": [{"name": entry, "budgett": 1.0}]}
    with pytest.raises(
        ConfigError, match=rf"\({entry}\)\.budgett: unknown argument \(did you mean 'budget'\?\)"
    ):
        build_technique(parse_config(typo).techniques[0])


def test_the_docs_example_config_builds_flexmod() -> None:
    from fedmm.core.config import build_technique, load_config

    root = Path(__file__).resolve().parents[3]
    cfg = load_config(root / "docs" / "examples" / "flexmod.toml")
    assert isinstance(build_technique(cfg.techniques[0]), FlexMod)


def _flexmod_error(arguments: dict[str, Any]) -> str:
    from fedmm.core.config import build_technique, parse_config

    cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "flexmod", **arguments}]})
    with pytest.raises(ConfigError) as info:
        build_technique(cfg.techniques[0])
    return str(info.value)


def test_a_misspelt_agent_option_is_refused_when_flexmod_is_built() -> None:
    # Was: accepted, then TypeError from BetaAgent after a full round of training.
    assert _flexmod_error({"agent": {"learning_strats": 2}}) == (
        "[[techniques]] #1 (flexmod).agent: has an unknown option 'learning_strats' "
        "(did you mean 'learning_starts'?); its options are batch_size, buffer_size, gamma, "
        "gradient_steps, learning_rate, learning_starts, net_arch, noise, noise_decay, tau"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"agent": {"noise": "x"}}, "(flexmod).agent.noise: must be a finite number >= 0, got 'x'"),
        ({"agent": {"net_arch": [64, 0]}}, "(flexmod).agent.net_arch: must be an integer >= 1, got 0"),
        (
            {"agent": {"seed": 1}},
            "(flexmod).agent.seed: is not an agent option: the agent takes the technique's",
        ),
        ({"agent": "fast"}, "(flexmod).agent: must be a table of options, got 'fast'"),
        ({"agent_path": "./no/agent.zip"}, "(flexmod).agent_path: './no/agent.zip' is not a file"),
        ({"reward_smoothing": 1.0}, "(flexmod).reward_smoothing: must be a finite number in [0, 1), got 1.0"),
        ({"tau_max": "high"}, "(flexmod).tau_max: must be a finite number > 0, got 'high'"),
        ({"budget": "all"}, "(flexmod).budget: must be a finite number > 0, got 'all'"),
        # Was: accepted, then numpy refused the negative seed when the agent first acted.
        ({"seed": -1}, "(flexmod).seed: must be an integer >= 0, got -1"),
    ],
)
def test_every_flexmod_argument_is_checked_when_built(arguments: dict[str, Any], message: str) -> None:
    assert message in _flexmod_error(arguments)


@pytest.mark.parametrize(
    ("cls", "arguments", "argument"),
    [
        (EntireUpdate, {"budget": 0}, "budget"),
        (PartialUpdate, {"budget": -1.0}, "budget"),
        # Was: accepted, then a ValueError from numpy in round 1's configure.
        (PartialUpdate, {"seed": -1}, "seed"),
    ],
)
def test_the_baselines_check_their_arguments_when_built(
    cls: type, arguments: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ArgumentError, match=rf"^{cls.name}: {argument} must be") as info:
        cls(**arguments)
    assert info.value.argument == argument


def test_beta_agent_checks_its_options() -> None:
    with pytest.raises(ConfigError, match=r"BetaAgent: agent.tau must be a finite number in \(0, 1\], got 0"):
        BetaAgent(6, tau=0)


def test_partial_update_uploads_only_the_encoders_its_combination_trained(data: FederatedDataset) -> None:
    # Partial Update's picks leave encoders untrained; their unchanged copies must not be averaged in.
    history = _fed(data, PartialUpdate(budget=0.5, seed=1)).run(3, progress=False)
    later = [r for r in history.ledger.records if r.round > 1]
    single = [r for r in later if set(r.flops_by_combination) <= {"a", "b"}]
    assert single, "no client drew a single-modality combination"
    for rec in later:
        trained = {m for key in rec.flops_by_combination for m in key.split("+")}
        encoders = {g.split(".")[1] for g in rec.groups_up if g.startswith("encoder.")}
        assert encoders == trained, (rec.client_id, rec.round, rec.groups_up)


def test_prototypes_from_the_training_passes_cost_no_report_pass(data: FederatedDataset) -> None:
    """``prototypes="training"``: the class prototypes are the mean embeddings of the round's own
    training forward passes (no extra pass over the data): the report costs next to nothing, the
    prototypes agree with the ones a pass after training gives, and nothing is left in the state."""
    histories = {}
    techs = {}
    feds = {}
    for source in ("after_training", "training"):
        techs[source] = FlexMod(beta=0.5, prototypes=source)
        feds[source] = _fed(data, techs[source])
        histories[source] = feds[source].run(3, progress=False)
    after, during = histories["after_training"], histories["training"]
    report_after = sum(r.flops_by_hook.get("report", 0) for r in after.ledger.records)
    report_during = sum(r.flops_by_hook.get("report", 0) for r in during.ledger.records)
    train = sum(r.flops_by_hook.get("train", 0) for r in during.ledger.records)
    assert report_after > 0.05 * train
    assert report_during < 1e-3 * report_after
    # Each modality got prototypes, close to those of a pass after training (same encoders,
    # a few steps apart): cosine similarity per class.
    for m in ("a", "b"):
        p_after, p_during = techs["after_training"]._protos[m][0], techs["training"]._protos[m][0]
        assert p_during.shape == p_after.shape and np.all(np.isfinite(p_during))
        norms = np.linalg.norm(p_after, axis=1) * np.linalg.norm(p_during, axis=1)
        cos = (p_after * p_during).sum(1) / norms
        assert np.median(cos) > 0.8, cos
    assert np.isfinite(during.rounds[-1]["flexmod/quality/a"])
    # The accumulators live only within a client's round.
    for state in feds["training"].client_states.values():
        assert not [k for k in state if k.startswith("flexmod/")], sorted(state)


def test_prototype_source_is_checked() -> None:
    assert FlexMod().args.prototypes == "training"  # the default: no extra pass over the data
    with pytest.raises((ArgumentError, ConfigError, ValueError), match="prototypes"):
        FlexMod(prototypes="sometimes")
