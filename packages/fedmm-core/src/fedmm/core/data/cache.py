"""Where built datasets are cached on disk."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The dataset cache: ``$FEDMM_CACHE`` if set, else ``~/.cache/fedmm``."""
    root = os.environ.get("FEDMM_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "fedmm"
    path.mkdir(parents=True, exist_ok=True)
    return path
