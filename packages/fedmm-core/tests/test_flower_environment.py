"""Starting Flower's simulation (Ray) leaves the caller's environment as it was."""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import pytest

pytest.importorskip("flwr")


def test_ray_start_does_not_leave_pythonpath_set_in_the_callers_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedmm.core.flower import simulation

    seen: dict[str, Any] = {}
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False  # type: ignore[attr-defined]

    def init(**kwargs: Any) -> None:
        # The raylet starts here and must inherit the path its workers import fedmm from.
        seen["env"] = os.environ.get("PYTHONPATH")
        seen["runtime"] = kwargs["runtime_env"]["env_vars"]["PYTHONPATH"]

    fake.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("PYTHONPATH", "/somewhere/of/the/user")
    simulation._init_ray(None)
    assert seen["env"] == seen["runtime"] and "/somewhere/of/the/user" in seen["env"]
    # A later subprocess (a pip in a fresh venv, a user's tool) must not see this process's paths.
    assert os.environ["PYTHONPATH"] == "/somewhere/of/the/user"
    monkeypatch.delenv("PYTHONPATH")
    simulation._init_ray(None)
    assert "PYTHONPATH" not in os.environ
