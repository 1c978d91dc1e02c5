"""``Federation``: a model, a federated dataset and a strategy, run by an engine.

>>> fed = Federation(model=models.late_fusion(data.modalities, data.num_classes), data=data,
...                  strategy=FedAvg(techniques=[...], clients_per_round=10))
>>> history = fed.run(rounds=50)   # in-process engine, progress bar
>>> history.ledger.totals()        # measured bytes, FLOPs (client and server), memory, seconds
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from fedmm.core import checkpoint as ckpt
from fedmm.core.arrays import GroupedArrays, get_arrays, model_groups, read_only, set_arrays
from fedmm.core.client import StepMeter, derive_seed
from fedmm.core.console import RoundProgress
from fedmm.core.data.types import FederatedDataset
from fedmm.core.devices import resolve_device
from fedmm.core.engine import Engine, InProcessEngine
from fedmm.core.errors import CheckpointError, ConfigError, FedmmError
from fedmm.core.failures import run_failure
from fedmm.core.ledger import Ledger
from fedmm.core.models.model import set_depth
from fedmm.core.protocol import RoundContext, Strategy
from fedmm.core.round import run_round

log = logging.getLogger("fedmm")

SELECT_SALT = 1
CLIENT_SALT = 2


@dataclass
class History:
    """Per-round metrics and the ledger of a run.

    ``failure()`` says whether the run trained nothing (see :func:`fedmm.core.failures.run_failure`):
    callers of :meth:`Federation.run` check it; ``fedmm run`` turns it into an error.
    """

    rounds: list[dict[str, Any]] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    min_clients: int | None = None  # the strategy's, for the failure text

    def failure(self) -> str | None:
        """Why the run failed — every round skipped, or some round lost every selected client
        to one cause — with the drops by cause, rounds and first error; None when it trained."""
        return run_failure(self.rounds, self.min_clients)

    def last(self, key: str, default: float = float("nan")) -> float:
        for r in reversed(self.rounds):
            if key in r:
                return float(r[key])
        return default


class Federation:
    """Runs ``strategy`` over ``data`` starting from ``model``'s weights.

    The model is the working instance clients train in turn (its weights are overwritten each
    client round); the global weights live as plain arrays. ``device`` (``"auto"``: the first
    CUDA GPU when torch sees one, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``) is where the
    model trains and is evaluated: the model is moved there. With ``batch_clients`` (the
    default) the in-process engine trains a round's clients together as one vectorised
    computation where their plans allow it (:mod:`fedmm.core.batched`). Every ``eval_every`` rounds the
    global model is scored on the test set, and with ``eval_validation`` on the data's validation
    split too (``val_accuracy``, ``val_f1_macro``, ...: for selecting a round by validation score).
    """

    def __init__(
        self,
        model: nn.Module,
        data: FederatedDataset,
        strategy: Strategy,
        *,
        seed: int = 0,
        eval_every: int = 1,
        eval_batch_size: int = 512,
        eval_validation: bool = False,
        eval_per_modality: bool = True,
        device: str | torch.device | None = "auto",
        batch_clients: bool = True,
    ) -> None:
        if eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0 (got {eval_every})")
        if eval_validation and data.validation is None:
            raise ConfigError(
                "eval_validation=True needs a validation split: "
                "federate the data with validation_fraction > 0"
            )
        if strategy.min_clients > data.num_clients:
            # No selection can reach it: every round would be skipped and the run train nothing.
            raise ConfigError(
                f"[strategy].min_clients: min_clients={strategy.min_clients} but the data has only "
                f"{data.num_clients} clients, so every round would be skipped; lower min_clients"
            )
        # Where the model trains and is evaluated; the global arrays stay on the host.
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        # The in-process engine trains a round's clients as one batch where the plans allow it.
        self.batch_clients = batch_clients
        self.data = data
        self.strategy = strategy
        self.seed = seed
        self.eval_every = eval_every
        self.eval_batch_size = eval_batch_size
        # Also score the server's validation split at each evaluation (``val_*`` metrics).
        self.eval_validation = eval_validation
        # Also score each modality alone on the test set (``accuracy/<m>``: one pass per modality).
        self.eval_per_modality = eval_per_modality
        self.groups = model_groups(model)
        # A technique that needs what this model lacks would drop every client it plans for.
        strategy.check_model(list(self.groups), [m.name for m in data.modalities])
        # A technique's own checks against this model and data (e.g. FedMFS's gamma <= M).
        strategy.check_federation(model, data)
        # Derived once: a per-round np.diff over a million offsets would make a round's cost
        # depend on the population.
        self.client_sizes = data.client_sizes()
        self.global_arrays: GroupedArrays = get_arrays(model)
        self.client_states: dict[int, dict[str, np.ndarray]] = {}
        self.reports: dict[int, dict[str, Any]] = {}
        self.history = History()
        self.round = 0
        self.meter = StepMeter()
        self._eval_model: nn.Module | None = None
        # Depth of the layered encoders the global model is evaluated at: the deepest the latest
        # round's plans ran (layer-wise methods grow it); empty = full depth.
        self.depth: dict[str, int] = {}

    # -- server-side model for evaluation --------------------------------------------------
    def model_with(self, arrays: GroupedArrays) -> nn.Module:
        if self._eval_model is None:
            self._eval_model = copy.deepcopy(self.model)
        set_arrays(self._eval_model, arrays)
        set_depth(self._eval_model, self.depth)
        self._eval_model.eval()
        return self._eval_model

    def context(self, round_: int) -> RoundContext:
        return RoundContext(
            round=round_,
            global_arrays=read_only(self.global_arrays),
            groups=MappingProxyType(self.groups),
            num_clients=self.data.num_clients,
            client_sizes=self.client_sizes,
            modalities=self.data.modalities,
            num_classes=self.data.num_classes,
            rng=np.random.default_rng(derive_seed(self.seed, round_, SELECT_SALT)),
            validation=self.data.validation,
            history=tuple(MappingProxyType(r) for r in self.history.rounds),
            reports=MappingProxyType(self.reports),
            model_factory=self.model_with,
        )

    # -- one round -------------------------------------------------------------------------
    def in_process_engine(self) -> InProcessEngine:
        """The default engine: this federation's clients, one after another, on its model."""
        return InProcessEngine(
            self.model,
            self.data,
            self.strategy.techniques,
            meter=self.meter,
            batch_clients=self.batch_clients,
        )

    def client_seed(self, round_: int, client_id: int) -> int:
        return derive_seed(self.seed, round_, client_id, CLIENT_SALT)

    def run_round(self, round_: int, engine: Engine | None = None) -> dict[str, Any]:
        """Run one round (:func:`fedmm.core.round.run_round`) on ``engine`` (default: in-process)."""
        return run_round(self, engine if engine is not None else self.in_process_engine(), round_)

    # -- the run ---------------------------------------------------------------------------
    def run(
        self,
        rounds: int,
        *,
        engine: str | Engine = "inprocess",
        progress: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 0,
        resume: bool = False,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        flower: dict[str, Any] | None = None,
    ) -> History:
        """Run until ``rounds`` rounds are done (continuing from a checkpoint with ``resume``).

        ``engine`` runs each round's planned clients (:mod:`fedmm.core.engine`): ``"inprocess"``
        (here, one after another), ``"flower"`` (Flower's simulation engine, one virtual SuperNode
        per client; needs ``fedmm-core[flower]``; ``flower`` holds its options, see
        :func:`fedmm.core.flower.simulate`), or an :class:`~fedmm.core.engine.Engine` object
        (e.g. a Flower ServerApp's :class:`~fedmm.core.flower.FlowerEngine`).
        """
        if isinstance(engine, str) and engine not in ("inprocess", "flower"):
            raise ConfigError(f"unknown engine {engine!r}; use 'inprocess', 'flower' or an Engine object")
        if not isinstance(engine, str) and not isinstance(engine, Engine):
            raise ConfigError(f"engine must be 'inprocess', 'flower' or an Engine object, got {engine!r}")
        if engine != "flower" and flower:
            raise ConfigError("flower options are given but engine is not 'flower'")
        if rounds < 0:
            raise ConfigError(f"rounds must be >= 0 (got {rounds})")
        if resume:
            if checkpoint_dir is None:
                raise ConfigError("resume=True needs checkpoint_dir")
            # The newest valid checkpoint, never a silent start from round 0: with none, this raises.
            found = ckpt.newest_valid(checkpoint_dir)
            for problem in found.skipped:
                log.warning("skipped checkpoint: %s", problem)
            self.load_checkpoint(found.path)

        def loop(engine: Engine) -> History:
            return self._loop(rounds, progress, checkpoint_dir, checkpoint_every, on_round, engine)

        if engine == "flower":
            try:
                from fedmm.core.flower import simulate
            except ImportError as exc:
                raise FedmmError(
                    f"engine='flower' needs Flower ({exc.name} is not installed): "
                    'pip install "fedmm-core[flower]"'
                ) from None
            return simulate(self, loop, **dict(flower or {}))
        return loop(engine if isinstance(engine, Engine) else self.in_process_engine())

    def _loop(
        self,
        rounds: int,
        progress: bool,
        checkpoint_dir: str | os.PathLike[str] | None,
        checkpoint_every: int,
        on_round: Callable[[dict[str, Any]], None] | None,
        engine: Engine,
    ) -> History:
        self.history.min_clients = self.strategy.min_clients
        bar = RoundProgress(rounds, self.round, enabled=progress)
        try:
            while self.round < rounds:
                self.round += 1
                metrics = self.run_round(self.round, engine)
                self.history.rounds.append(metrics)
                if on_round is not None:
                    on_round(metrics)
                bar.update(self.round, metrics)
                if (
                    checkpoint_dir is not None
                    and checkpoint_every
                    and (self.round % checkpoint_every == 0 or self.round == rounds)
                ):
                    self.save_checkpoint(checkpoint_dir)
        finally:
            bar.close()
        set_arrays(self.model, self.global_arrays)
        set_depth(self.model, self.depth)
        return self.history

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy.state_dict(),
            "clients": {str(k): v for k, v in self.client_states.items()},
            "reports": {str(k): v for k, v in self.reports.items()},
            "history": self.history.rounds,
            "ledger": self.history.ledger.to_list(),
            "ledger_server": self.history.ledger.server_to_list(),
            "seed": self.seed,
            "num_clients": self.data.num_clients,
            "depth": dict(self.depth),
        }

    def save_checkpoint(self, directory: str | os.PathLike[str]) -> Path:
        return ckpt.save(directory, self.round, self.global_arrays, self.state())

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        round_, arrays, state = ckpt.load(path)
        if state.get("num_clients") != self.data.num_clients or state.get("seed") != self.seed:
            raise CheckpointError(
                f"{path}: checkpoint is of a run with seed={state.get('seed')} and "
                f"{state.get('num_clients')} clients, "
                f"this run has seed={self.seed} and {self.data.num_clients}"
            )
        if set(arrays) != set(self.global_arrays):
            raise CheckpointError(f"{path}: checkpoint groups {sorted(arrays)} differ from the model's")
        try:
            global_arrays = {g: {k: arrays[g][k] for k in keys} for g, keys in self.groups.items()}
            client_states = {int(k): dict(v) for k, v in state["clients"].items()}
            reports = {int(k): dict(v) for k, v in state["reports"].items()}
            # Checkpoints written before server costs were measured have none.
            ledger = Ledger.from_list(state["ledger"], state.get("ledger_server", []))
            history = History(list(state["history"]), ledger)
            depth = {str(k): int(v) for k, v in state.get("depth", {}).items()}
            strategy_state = state["strategy"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: the checkpoint's state is not a fedmm run's ({type(exc).__name__}: {exc})"
            ) from None
        self.strategy.load_state_dict(strategy_state)
        self.global_arrays, self.client_states, self.reports = global_arrays, client_states, reports
        self.history, self.depth, self.round = history, depth, round_
