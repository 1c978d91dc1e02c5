"""fedmm.suite — every fedmm technique in one install (``pip install fedmm-suite``).

The suite owns no technique: each package registers its techniques and benchmarks itself
(entry points ``fedmm.techniques`` and ``fedmm.benchmarks``), so the ``fedmm`` CLI and TOML
configs find them. The suite ships the technique catalog (``catalog.toml``, entry point
``fedmm.catalog``): which package provides each technique, so that a config naming one that is
not installed is told what to install. This module only reports what is installed and expected.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from importlib.resources import files

from fedmm.core.catalog import read_catalog

__all__ = ["CATALOG", "EXPECTED", "installed"]

CATALOG = files(__name__) / "catalog.toml"
"""The technique catalog file (registered under the entry-point group ``fedmm.catalog``)."""

EXPECTED: dict[str, tuple[str, ...]] = read_catalog(CATALOG)
"""The techniques each package of the suite registers (the catalog's content)."""


def installed(group: str = "fedmm.techniques") -> dict[str, str]:
    """Registered name → the distribution that provides it (``group``: techniques or benchmarks)."""
    return {ep.name: ep.dist.name if ep.dist is not None else "?" for ep in entry_points(group=group)}
