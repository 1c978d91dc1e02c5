"""fedmm on Flower (``pip install "fedmm-core[flower]"``).

- ``fed.run(rounds, engine="flower")`` / ``fedmm run cfg.toml --engine flower``: Flower's
  simulation engine (:func:`simulate`).
- ``fedmm.core.flower.app:server_app`` / ``:client_app``: a Flower App for the deployment engine
  (a SuperLink and real SuperNodes), built from a fedmm TOML config (``docs/flower.md``).
"""

from fedmm.core.flower.apps import ClientRuntime, FlowerEngine, discover, make_client_app
from fedmm.core.flower.simulation import simulate

__all__ = ["ClientRuntime", "FlowerEngine", "discover", "make_client_app", "simulate"]
