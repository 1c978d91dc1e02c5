"""``FlexMod``: importance-aware modality scheduling.

Reference: Bian, Wang, Xu, "Prioritizing Modalities: Flexible Importance Scheduling in Federated
Multimodal Learning" (arXiv 2408.06549). Method notes (what we do, where it departs from the
paper): ``docs/methods/flexmod.md``.

Per round (hooks):

* ``report`` (client): local class prototypes and class counts of every modality it holds,
  computed with its updated encoders.
* ``after_round`` (server): global prototypes (count-weighted merge); encoder quality ``q_m`` and
  training need ``u_m``; Shapley importance ``φ̂_m`` of the global model on the server's validation
  split (core's exact Shapley, modalities outside a coalition masked); the DDPG agent's reward
  (the change of the exponentially smoothed validation accuracy) and its next β.
* ``configure`` (server): for each client, modality weights ``w_m = β φ̂_m + (1 − β) u_m``, the
  convex allocation of the client's budget over modality combinations that maximises
  ``Σ_m w_m log(1 + n_m)`` (``n_m``: the effective training of encoder ``m``) with a floor per
  modality (cvxpy), integer iterations, and the plan's combinations in descending cardinality.
  Round 1 (no statistics yet) is an Entire Update round.

The budget (in FLOPs, shared with the Entire / Partial Update baselines in
``fedmm.schedule.baselines``) and the measured step costs: :mod:`fedmm.schedule.flexmod.budget`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from fedmm.core.api import (
    MISSING_LABEL,
    Batch,
    ClientContext,
    Combination,
    ConfigError,
    ModelOutput,
    ResultsContext,
    RoundContext,
    TechniqueArguments,
    TrainPlan,
    collect_embeddings,
    modality_prototypes,
    update_prototypes,
)
from fedmm.schedule.flexmod.agent import BetaAgent, check_agent_options, read_saved_agent
from fedmm.schedule.flexmod.allocation import (
    allocate,
    combination_weights,
    encoder_credits,
    execution_order,
    integer_allocation,
    modality_combinations,
    modality_weights,
)
from fedmm.schedule.flexmod.budget import COUNTS, PROTO, BudgetArguments, BudgetedSchedule
from fedmm.schedule.flexmod.env import REWARD_SMOOTHING, RoundSignals, observation, smoothed_accuracy
from fedmm.schedule.flexmod.signals import importance, quality, training_need

if TYPE_CHECKING:
    from torch import nn

    from fedmm.core.api import ClientData

__all__ = ["FlexMod", "FlexModArguments"]


# prototypes="training": per-class embedding sums and counts, kept in the client's state for the
# length of one round (set by loss_terms, removed by report).
_SUMS = "flexmod/prototype_sums/"
_SEEN = "flexmod/prototype_counts/"


def _key(combo: Sequence[str]) -> str:
    return "+".join(combo)


class FlexModArguments(BudgetArguments):
    """FlexMod's arguments: the budget it shares with its baselines, and its own."""

    beta: float | None = Field(
        None,
        ge=0,
        le=1,
        description="a fixed β (no agent): 1 = importance only, 0 = training need only; omitted = the DDPG "
        "agent chooses β every round",
    )
    tau_min: float = Field(
        0.5,
        ge=0,
        description="iterations the full combination always gets, as a multiple of Entire Update's "
        "iterations (joint steps train the fusion; at least one whenever the budget allows)",
    )
    tau_max: float = Field(
        2.0,
        gt=0,
        description="cap on any combination's iterations, as a multiple of Entire Update's iterations",
    )
    floor: float = Field(
        0.25,
        ge=0,
        description="effective training every modality with a non-zero weight gets at least, as a multiple "
        "of Entire Update's iterations (lowered to what the budget can pay for)",
    )
    imbalance_discount: bool = Field(
        True,
        description="a joint step trains a modality the fused model relies on little less than one that "
        "trains it alone (κ = min(1, |S|·φ̂_m / Σ φ̂)); false: every step of S fully trains each m in S",
    )
    prototypes: Literal["training", "after_training"] = Field(
        "training",
        description="where a client's class prototypes come from: `training` = the mean embeddings of the "
        "round's own training forward passes (no extra pass; embeddings from encoders a few steps older), "
        "`after_training` = a forward pass over all its data with the updated encoders (the paper's; charged "
        "as the `report` hook, about a sixth of FlexMod's client FLOPs in `fedmm bench flexmod` protocol 3)",
    )
    agent_path: str | None = Field(
        None,
        description="start from an agent saved with `BetaAgent.save` (one safetensors file, its whole "
        "state: networks, optimisers, replay buffer, noise), e.g. one pre-trained offline on "
        "`fedmm/FlexMod-v0`; `agent` options override its settings",
    )
    reward_smoothing: float = Field(
        REWARD_SMOOTHING,
        ge=0,
        lt=1,
        description="the agent's reward is the change of an exponential moving average of the validation "
        "accuracy, s = α·s + (1 − α)·accuracy, with this α; 0 = the raw one-round change (noisier)",
    )
    agent: dict[str, Any] = Field(
        default_factory=dict,
        description="options of the DDPG agent (`BetaAgent`): `learning_starts` (8), `batch_size` (32), "
        "`buffer_size` (1000), `gamma` (0.9), `tau` (0.01), `learning_rate` (1e-3), `net_arch`, "
        "`noise` (0.1), `noise_decay` (0.99), `gradient_steps` (4)",
    )
    # Seeds numpy generators: not negative.
    seed: int = Field(0, ge=0, description="seeds the agent (networks, replay sampling, exploration)")

    @field_validator("agent_path", mode="before")
    @classmethod
    def _saved_agent(cls, path: Any) -> Any:
        if path is None:
            return None
        if not isinstance(path, str) or not path:
            raise ValueError(f"must be a file saved with BetaAgent.save or omitted, got {path!r}")
        # Read now, so a wrong file is refused when FlexMod is built, not after its first round.
        try:
            read_saved_agent(path)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return path

    @field_validator("agent", mode="before")
    @classmethod
    def _agent_options(cls, options: Any) -> dict[str, Any]:
        # Names, types and ranges of BetaAgent's options, checked without building it, so a misspelt
        # one is refused now and not when the agent first acts after a round of training.
        return check_agent_options("flexmod", options)


class FlexMod(BudgetedSchedule):
    """FlexMod: importance- and quality-aware allocation of local iterations to modality combinations.
    Arguments: :class:`FlexModArguments`."""

    name: ClassVar[str] = "flexmod"
    Arguments: ClassVar[type[TechniqueArguments]] = FlexModArguments
    args: FlexModArguments

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A fixed β; the offline simulator (fedmm.schedule.flexmod.env) sets it between rounds.
        self.fixed_beta: float | None = self.args.beta
        self._agent: BetaAgent | None = None
        self._reset()

    def _reset(self) -> None:
        self._beta = 0.5 if self.fixed_beta is None else self.fixed_beta
        self._signals: RoundSignals | None = None
        self._names: tuple[str, ...] = ()
        self._protos: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._quality: dict[str, float] = {}
        self._prev_obs: np.ndarray | None = None
        self._smoothed: float | None = None  # smoothed validation accuracy (the reward's basis)
        self._planned: dict[str, list[int]] = {}

    @property
    def beta(self) -> float:
        """The β the next round's allocation uses."""
        return self.fixed_beta if self.fixed_beta is not None else self._beta

    def signals(self) -> RoundSignals:
        """The latest importance, training need and validation accuracy (after a round)."""
        if self._signals is None:
            raise RuntimeError("FlexMod has no signals before its first round")
        return self._signals

    def agent(self, num_modalities: int) -> BetaAgent:
        if self._agent is None:
            dim = 2 * num_modalities + 2
            args = self.args
            if args.agent_path is not None:
                self._agent = BetaAgent.load(args.agent_path, dim, seed=args.seed, **args.agent)
            else:
                self._agent = BetaAgent(dim, seed=args.seed, **args.agent)
        return self._agent

    # -- the allocation ------------------------------------------------------------------------
    def allocation(
        self, ctx: RoundContext, client_id: int, plan: TrainPlan
    ) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray, np.ndarray, float]:
        """``(combos, Σ_{m∈S} w_m, costs c_S, integer iterations τ_S, budget B)`` of one client."""
        assert self._signals is not None
        held = self._held(ctx, client_id, plan)
        combos = modality_combinations(held)
        costs = self._step_costs(ctx, combos, plan)
        iters = self._entire_iterations(ctx, client_id, plan)
        budget = self.budget * iters * costs[0]
        imp = dict(zip(self._names, self._signals.importance.tolist(), strict=True))
        need = dict(zip(self._names, self._signals.need.tolist(), strict=True))
        weights = modality_weights(held, imp, need, self.beta)
        if not np.any(weights > 0):
            weights = np.ones_like(weights)
        credits = encoder_credits(combos, held, imp if self.args.imbalance_discount else None)
        tau_max = max(1, math.floor(self.args.tau_max * iters))
        # At least one joint step whenever the budget pays for one (τ_min rounds up).
        tau_min = min(float(math.ceil(self.args.tau_min * iters)), math.floor(budget / costs[0]), tau_max)
        tau = allocate(
            weights, credits, costs, budget, tau_max=tau_max, tau_min=tau_min, floor=self.args.floor * iters
        )
        steps = integer_allocation(tau, weights, credits, costs, budget, tau_max=tau_max)
        return combos, combination_weights(weights, credits), costs, steps, budget

    def configure(self, ctx: RoundContext, client_id: int, plan: TrainPlan) -> TrainPlan:
        if self._signals is None:  # round 1: no statistics yet, an Entire Update round
            first = max(1, math.floor(self.budget * self._entire_iterations(ctx, client_id, plan)))
            return plan.replace(combinations=(Combination(self._held(ctx, client_id, plan), first),))
        combos, factors, _, steps, _ = self.allocation(ctx, client_id, plan)
        order = [i for i in execution_order(combos, factors) if steps[i] > 0]
        for i, s in enumerate(combos):
            self._planned.setdefault(_key(s), []).append(int(steps[i]))
        return plan.replace(combinations=tuple(Combination(combos[i], int(steps[i])) for i in order))

    # -- client --------------------------------------------------------------------------------
    def loss_terms(self, cctx: ClientContext, batch: Batch, outputs: ModelOutput) -> Mapping[str, Any]:
        # prototypes="training": add each step's embeddings to per-class sums in the client's state
        # (no loss term; the sums leave the state in `report`, so nothing outlives the round).
        if self.args.prototypes != "training":
            return {}
        import torch

        labelled = batch.labels != MISSING_LABEL
        for i, m in enumerate(batch.modalities):
            z = outputs.embeddings.get(m)
            if z is None:
                continue
            rows = outputs.present[:, i] & labelled
            if not bool(rows.any()):
                continue
            z = z.detach()[rows].to(torch.float64)
            y = batch.labels[rows]
            sums = z.new_zeros((cctx.num_classes, z.shape[1])).index_add_(0, y, z)
            counts = torch.bincount(y, minlength=cctx.num_classes).to(torch.float64)
            for key, value in ((_SUMS + m, sums), (_SEEN + m, counts)):
                prev = cctx.state.get(key)
                host = value.cpu().numpy()
                cctx.state[key] = host if prev is None else prev + host
        return {}

    def report(self, cctx: ClientContext, model: nn.Module, data: ClientData) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        if self.args.prototypes == "training":
            for m in [k[len(_SUMS) :] for k in list(cctx.state) if k.startswith(_SUMS)]:
                sums, seen = cctx.state.pop(_SUMS + m), cctx.state.pop(_SEEN + m)
                protos = sums / np.maximum(seen, 1.0)[:, None]
                out[PROTO + m] = protos.astype(np.float32)
                out[COUNTS + m] = seen.astype(np.int64)
            return out
        emb = collect_embeddings(model, data.batches(512, shuffle=False))
        for m, (protos, counts) in modality_prototypes(emb, cctx.num_classes).items():
            out[PROTO + m] = protos.astype(np.float32)
            out[COUNTS + m] = counts
        return out

    # -- server --------------------------------------------------------------------------------
    def after_round(self, ctx: ResultsContext, metrics: dict[str, Any]) -> None:
        names = tuple(m.name for m in ctx.modalities)
        self._names = names
        for m in names:
            reps = [r.report for r in ctx.results if PROTO + m in r.report]
            if not reps:
                continue
            # Classes nobody reported this round keep their last prototype.
            self._protos[m] = update_prototypes(
                self._protos.get(m),
                [np.asarray(r[PROTO + m]) for r in reps],
                [np.asarray(r[COUNTS + m]) for r in reps],
            )
        self._quality = quality(self._protos)
        need = training_need({m: self._quality.get(m, 0.0) for m in names})
        if ctx.validation is None or len(ctx.validation) == 0:
            raise ConfigError(
                "flexmod needs a server validation split for modality importance and the agent's reward: "
                "load the data with validation_fraction > 0 (e.g. [data] validation_fraction = 0.1)"
            )
        phi, phi_hat, accuracy = importance(ctx.global_model(), ctx.validation, names)
        prev_smoothed = self._smoothed
        self._smoothed = smoothed_accuracy(prev_smoothed, accuracy, self.args.reward_smoothing)
        used_beta = self.beta
        self._signals = RoundSignals(
            np.array([phi_hat[m] for m in names]), np.array([need[m] for m in names]), accuracy
        )
        obs = observation(self._signals, used_beta)
        if self.fixed_beta is None:
            agent = self.agent(len(names))
            if self._prev_obs is not None and prev_smoothed is not None:
                reward = self._smoothed - prev_smoothed
                agent.observe(self._prev_obs, used_beta, reward, obs)
                metrics["flexmod/reward"] = reward
            self._beta = agent.act(obs)
            self._prev_obs = obs
        metrics["flexmod/beta"] = used_beta
        metrics["flexmod/val_accuracy"] = accuracy
        metrics["flexmod/val_accuracy_smoothed"] = self._smoothed
        for m in names:
            metrics[f"flexmod/importance/{m}"] = phi_hat[m]
            metrics[f"flexmod/shapley/{m}"] = phi[m]
            metrics[f"flexmod/need/{m}"] = need[m]
            if m in self._quality:
                metrics[f"flexmod/quality/{m}"] = self._quality[m]
        for key, steps in self._planned.items():
            metrics[f"flexmod/iterations/{key}"] = float(np.mean(steps))
        self._planned = {}

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sig = self._signals
        return {
            **self._cost_state(),
            "beta": self._beta,
            "names": list(self._names),
            "signals": None
            if sig is None
            else {"importance": sig.importance, "need": sig.need, "accuracy": sig.accuracy},
            "prototypes": {m: {"p": p, "c": c} for m, (p, c) in self._protos.items()},
            "prev_obs": self._prev_obs,
            "smoothed_accuracy": self._smoothed,
            "agent": None if self._agent is None else self._agent.state_dict(),
            "agent_dim": None if self._agent is None else 2 * len(self._names) + 2,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._reset()
        self._load_cost_state(state)
        self._beta = float(state["beta"])
        self._names = tuple(state["names"])
        sig = state["signals"]
        if sig is not None:
            self._signals = RoundSignals(
                np.asarray(sig["importance"], dtype=np.float64),
                np.asarray(sig["need"], dtype=np.float64),
                float(sig["accuracy"]),
            )
        self._protos = {
            m: (np.asarray(v["p"], dtype=np.float64), np.asarray(v["c"], dtype=np.int64))
            for m, v in state["prototypes"].items()
        }
        self._quality = quality(self._protos)
        self._prev_obs = (
            None if state["prev_obs"] is None else np.asarray(state["prev_obs"], dtype=np.float32)
        )
        # Checkpoints from before the smoothed reward: start the average at the last accuracy.
        smoothed = state.get("smoothed_accuracy", None if sig is None else sig["accuracy"])
        self._smoothed = None if smoothed is None else float(smoothed)
        if state.get("agent") is not None:
            self._agent = None
            agent = self.agent((int(state["agent_dim"]) - 2) // 2)
            agent.load_state_dict(state["agent"])
