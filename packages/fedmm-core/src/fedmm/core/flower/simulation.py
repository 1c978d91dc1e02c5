"""Run a :class:`~fedmm.core.federation.Federation` on Flower's simulation engine.

``fed.run(rounds, engine="flower")`` lands here. Flower's simulation engine runs one virtual
SuperNode per client (``partition-id`` = client index) and executes their ClientApps in Ray
actors; the ServerApp is this process's Federation with :class:`FlowerEngine` as its engine,
so in-process and Flower runs share every line of server code.

Why ``flwr.simulation.run_simulation`` and not ``flwr run``: Flower 1.42 deprecates the Python
entry point in favour of ``flwr run`` with a Flower App Bundle and a SuperLink connection, which
rebuilds everything from files. A Federation built in Python (your model object, your dataset,
your technique objects) has no file form, so running it from Python needs the programmatic path.
Config-file runs use the documented one: see :mod:`fedmm.core.flower.app` and
``docs/flower.md``. Tested with Flower 1.42 (the ``fedmm-core[flower]`` extra pins ``>=1.42,<1.43``).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmm.core.errors import ConfigError, FedmmError
from fedmm.core.flower.apps import ClientRuntime, FlowerEngine, make_client_app

if TYPE_CHECKING:
    from fedmm.core.engine import Engine
    from fedmm.core.federation import Federation, History

# Runtimes already fetched by this (actor) process, by payload token.
_RUNTIMES: dict[str, ClientRuntime] = {}


class _ObjectStoreRuntime:
    """Gives each Ray actor the federation's client side once, from Ray's object store.

    Flower pickles the ClientApp with every message it hands an actor, so the ClientApp must stay
    small: it holds only this reference; the model, dataset and techniques cross once per actor.
    """

    def __init__(self, token: str, ref: Any) -> None:
        self.token = token
        self.ref = ref

    def __call__(self, context: Context) -> ClientRuntime:
        runtime = _RUNTIMES.get(self.token)
        if runtime is None:
            import ray

            runtime = ray.get(self.ref)
            _RUNTIMES.clear()  # one federation per actor at a time
            _RUNTIMES[self.token] = runtime
        return runtime


class _QuietDeprecation(logging.Filter):
    """Drops Flower's notice that ``run_simulation`` is deprecated: the module docstring says why
    fedmm uses it, and a user cannot act on the notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation" not in record.getMessage()


def _init_ray(num_cpus: int | None) -> None:
    # Keep Ray's current behaviour on CPU-only clients and skip its warning about a future change.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import ray

    if ray.is_initialized():
        return
    # The actors must import this process's modules (Flower's backend does the same).
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    before = os.environ.get("PYTHONPATH")
    if before:
        pythonpath += os.pathsep + before
    # The raylet (and the workers it forks) start inside ray.init and inherit the environment;
    # afterwards the caller's own PYTHONPATH comes back, so a later subprocess of the user's (a
    # pip in a fresh venv, say) does not see this interpreter's site-packages.
    os.environ["PYTHONPATH"] = pythonpath
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        )
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def simulate(
    fed: Federation,
    loop: Callable[[Engine], History],
    *,
    client_cpus: float = 1.0,
    num_cpus: int | None = None,
    round_timeout: float | None = None,
    verbose: bool = False,
) -> History:
    """Run ``loop`` (the federation's round loop, given the engine) as the ServerApp of a Flower
    simulation, with a :class:`FlowerEngine` on the simulation's grid.

    ``client_cpus``: CPUs Ray reserves per ClientApp (so ``num_cpus / client_cpus`` run at once);
    ``num_cpus``: CPUs Ray may use (default: all); ``round_timeout``: seconds to wait for a
    round's replies (None = until all arrive).
    """
    from flwr.simulation import run_simulation

    if client_cpus <= 0:
        raise ConfigError(f"flower.client_cpus must be > 0 (got {client_cpus})")
    _init_ray(num_cpus)
    import ray

    runtime = ClientRuntime(
        model=copy.deepcopy(fed.model),
        data=fed.data,
        techniques=list(fed.strategy.techniques),
        threads=torch.get_num_threads(),
    )
    source = _ObjectStoreRuntime(uuid.uuid4().hex, ray.put(runtime))
    outcome: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        engine = FlowerEngine(
            grid,
            model=fed.model,
            num_clients=fed.data.num_clients,
            round_timeout=round_timeout,
            node_wait=10.0,
        )
        outcome["history"] = loop(engine)

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    quiet = _QuietDeprecation()
    flwr_logger.addFilter(quiet)
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    try:
        run_simulation(
            server_app=server_app,
            client_app=make_client_app(source),
            num_supernodes=fed.data.num_clients,
            backend_config={"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}},
            verbose_logging=verbose,
        )
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.removeFilter(quiet)
        _RUNTIMES.clear()
    if "history" not in outcome:
        raise FedmmError("the Flower simulation ended without finishing the run; see Flower's log above")
    history: History = outcome["history"]
    return history


__all__ = ["simulate"]
