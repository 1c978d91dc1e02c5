"""Flower's deployment engine on loopback: a SuperLink and three SuperNode processes.

One run of a fedmm config through ``flwr run``: round 1 must match the in-process run of the same
config; then a SuperNode is killed while round 2 is in flight, and the run must finish every
round with the survivors (the in-process fault rule: a lost client is dropped, the round goes on).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from fedmm.core.config import load_config
from fedmm.core.errors import FedmmError
from fedmm.core.flower.local import LocalDeployment, write_app
from fedmm.core.runner import build_federation

# SuperLink, SuperNodes and ServerApp processes: the integration tier (`pytest -m integration`).
pytestmark = pytest.mark.integration

CONFIG = """
[run]
name = "deployment"
rounds = 3
seed = 0

[data]
name = "synthetic"
clients = 3

[strategy]
clients_per_round = 3
"""


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_deployment_matches_in_process_and_survives_a_killed_supernode(tmp_path: Path) -> None:
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(CONFIG)
    out = tmp_path / "run"
    app = write_app(tmp_path / "app")
    expected = build_federation(load_config(cfg_path)).run(3, progress=False)

    with LocalDeployment(3, tmp_path / "flwr") as dep:
        run = dep.submit(
            app, {"config": str(cfg_path), "out": str(out), "round-timeout": 40.0, "min-nodes": 3}
        )
        deadline = time.monotonic() + 240
        while len(_rows(out / "metrics.jsonl")) < 1:
            assert run.poll() is None, f"the run ended early; see {tmp_path / 'flwr' / 'logs'}"
            assert time.monotonic() < deadline, "round 1 did not finish in time"
            time.sleep(0.1)
        # Round 2 starts as round 1's row is written: its messages are in flight now.
        dep.kill_node(2)
        assert run.wait(timeout=240) == 0

    rows = _rows(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3]
    first = rows[0]
    assert first["dropped"] == 0
    for key in ("accuracy", "loss", "train_loss"):
        assert abs(first[key] - expected.rounds[0][key]) <= 1e-4
    for later in rows[1:]:
        assert later["dropped"] == 1 and later["skipped"] is False
        assert later["selected"] == 3
    assert json.loads((out / "summary.json").read_text())["rounds"] == 3


def test_run_config_must_be_strings_or_numbers(tmp_path: Path) -> None:
    with pytest.raises(FedmmError, match="string or a number"):
        write_app(tmp_path, config=["a"])


def test_flower_app_command_writes_an_app_flower_accepts(tmp_path: Path) -> None:
    from flwr.cli.config_utils import load_and_validate

    from fedmm.core.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    args = ["flower-app", str(tmp_path / "app"), "--config", str(cfg), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    config, _ = load_and_validate(tmp_path / "app" / "pyproject.toml", check_module=True)
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "fedmm.core.flower.app:server_app",
        "clientapp": "fedmm.core.flower.app:client_app",
    }
    assert config["tool"]["flwr"]["app"]["config"]["config"] == str(cfg.resolve())
    # A broken config is refused before anything reaches a SuperLink.
    cfg.write_text("[data]\nclients = 0\n")
    assert main(["flower-app", str(tmp_path / "bad"), "--config", str(cfg), "--out", str(tmp_path)]) == 2


def test_secure_deployment_refuses_an_unregistered_supernode(tmp_path: Path) -> None:
    """TLS everywhere and node authentication, as docs/flower.md sets up real machines: the
    registered node serves its client; a node with a valid TLS root but an unregistered key
    never joins, so its client is dropped every round."""
    from fedmm.core.flower.local import make_credentials

    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(CONFIG.replace("rounds = 3", "rounds = 2").replace("clients = 3", "clients = 2"))
    out = tmp_path / "run"
    rogue = make_credentials(tmp_path / "rogue", 1)
    with LocalDeployment(1, tmp_path / "flwr", num_partitions=2, secure=True) as dep:
        dep.start_node(1, private_key=rogue / "node0")
        dep.run(
            write_app(tmp_path / "app"),
            {"config": str(cfg_path), "out": str(out), "min-nodes": 1, "node-wait": 5.0},
            timeout=240,
        )
    rows = _rows(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["selected"] == 2 and r["dropped"] == 1 and not r["skipped"] for r in rows)
    superlink_log = (tmp_path / "flwr" / "logs" / "superlink.log").read_text()
    assert "https://" in superlink_log
    assert "No SuperNode found with the given public key" in superlink_log
