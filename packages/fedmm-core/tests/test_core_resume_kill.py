"""A run killed mid-way and resumed ends with bit-identical weights to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

# A run in a subprocess killed mid-round: the integration tier (`pytest -m integration`).
pytestmark = pytest.mark.integration

CONFIG = """
[run]
name = "killme"
seed = 11
rounds = {rounds}
checkpoint_every = 1

[data]
name = "synthetic"
clients = 8
partition = "dirichlet"
alpha = 1.0
options = {{ num_samples = 2400, test_samples = 200 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}

[strategy]
clients_per_round = 4
local_epochs = 2
lr = 0.05
momentum = 0.9
"""


def _final_weights(run_dir: Path) -> dict[str, object]:
    latest = (run_dir / "checkpoint" / "LATEST").read_text().strip()
    return load_file(str(run_dir / "checkpoint" / latest / "model.safetensors"))


def _fedmm(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedmm.core.cli", *args]


def test_killed_run_resumes_bit_identically(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.format(rounds=8))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_fedmm("run", str(cfg), "--run-dir", str(straight), "-q"), check=True, timeout=300)

    proc = subprocess.Popen(_fedmm("run", str(cfg), "--run-dir", str(killed), "-q"))
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoint" / "round-000003").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    latest = (killed / "checkpoint" / "LATEST").read_text().strip()
    assert latest != "round-000008", "the run finished before it could be killed"

    subprocess.run(
        _fedmm("run", str(cfg), "--run-dir", str(killed), "--resume", "-q"), check=True, timeout=300
    )
    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key  # type: ignore[union-attr]
    rows = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 8
