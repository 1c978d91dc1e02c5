"""A Flower App that runs a fedmm TOML config on Flower's deployment engine.

Point a Flower App's components at these objects (``fedmm flower-app`` writes such an app
folder)::

    [tool.flwr.app.components]
    serverapp = "fedmm.core.flower.app:server_app"
    clientapp = "fedmm.core.flower.app:client_app"

    [tool.flwr.app.config]
    config = "/path/to/run.toml"   # the fedmm config, readable on the SuperLink and every SuperNode
    out = "/path/to/run-folder"     # where the ServerApp writes metrics.jsonl, summary.json, ...
    round-timeout = 0.0             # seconds to wait for a round's replies (0 = until all arrive)
    node-wait = 60.0                # seconds to wait for the SuperNodes to connect
    min-nodes = 0                   # nodes to wait for (0 = one per client of the config)

Every SuperNode is started with ``--node-config "partition-id=<k> num-partitions=<clients>"``
and builds client ``k`` of the config's federated dataset (the loaders partition
deterministically from ``[run].seed``, so every node agrees on the split). See ``docs/flower.md``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmm.core.config import RunConfig, load_config
from fedmm.core.errors import ConfigError
from fedmm.core.federation import Federation
from fedmm.core.flower.apps import ClientRuntime, FlowerEngine, make_client_app

# Built once per ClientApp process and config file version.
_RUNTIMES: dict[tuple[str, float], ClientRuntime] = {}


def _config(context: Context) -> tuple[Path, RunConfig]:
    value = context.run_config.get("config")
    if not value:
        raise ConfigError(
            "the Flower run config has no 'config' (the fedmm TOML file); "
            "pass --run-config 'config=\"/path/run.toml\"' to `flwr run`"
        )
    path = Path(str(value)).expanduser()
    return path, load_config(path)


def runtime_from_config(context: Context) -> ClientRuntime:
    """The client side of the run config's federation (dataset, model, techniques)."""
    from fedmm.core.devices import resolve_device
    from fedmm.core.runner import build_dataset, build_model, build_strategy

    path, cfg = _config(context)
    key = (str(path.resolve()), path.stat().st_mtime)
    runtime = _RUNTIMES.get(key)
    if runtime is None:
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        data = build_dataset(cfg)
        strategy = build_strategy(cfg)
        model = build_model(cfg, data, strategy).to(resolve_device(cfg.run.device))
        runtime = ClientRuntime(model, data, list(strategy.techniques))
        _RUNTIMES.clear()
        _RUNTIMES[key] = runtime
    return runtime


def _seconds(context: Context, key: str, default: float) -> float:
    value = context.run_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"the Flower run config's {key!r} must be a number of seconds >= 0 (got {value!r})")
    return float(value)


client_app = make_client_app(runtime_from_config)
server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from fedmm.core.runner import run_config

    _, cfg = _config(context)
    out = context.run_config.get("out")
    if not out:
        raise ConfigError("the Flower run config has no 'out' (the run folder the ServerApp writes)")
    timeout = _seconds(context, "round-timeout", 0.0)
    node_wait = _seconds(context, "node-wait", 60.0)
    min_nodes = int(_seconds(context, "min-nodes", 0))

    def make_engine(fed: Federation) -> FlowerEngine:
        return FlowerEngine(
            grid,
            model=fed.model,
            num_clients=fed.data.num_clients,
            round_timeout=timeout or None,
            node_wait=node_wait,
            min_nodes=min_nodes or None,
        )

    run_config(cfg, Path(str(out)), progress=False, make_engine=make_engine)


__all__ = ["client_app", "runtime_from_config", "server_app"]
