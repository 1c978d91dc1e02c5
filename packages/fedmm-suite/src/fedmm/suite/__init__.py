"""fedmm.suite — every fedmm technique in one install (``pip install fedmm-suite``).

The suite owns no technique: each package registers its techniques and benchmarks itself
(entry points ``fedmm.techniques`` and ``fedmm.benchmarks``), so the ``fedmm`` CLI and TOML
configs find them. This module only reports what is installed.
"""

from __future__ import annotations

from importlib.metadata import entry_points

__all__ = ["EXPECTED", "installed"]

EXPECTED = {
    "fedmm-select": ("bmsfed", "fedmfs"),
    "fedmm-schedule": ("entire_update", "flexmod", "partial_update"),
    "fedmm-layerwise": ("layerwise",),
    "fedmm-completion": ("fedmvp",),
}
"""The techniques each package of the suite registers."""


def installed(group: str = "fedmm.techniques") -> dict[str, str]:
    """Registered name → the distribution that provides it (``group``: techniques or benchmarks)."""
    return {ep.name: ep.dist.name if ep.dist is not None else "?" for ep in entry_points(group=group)}
