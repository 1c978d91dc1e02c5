"""Where built datasets are cached on disk."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """The dataset cache: ``$FEDMM_CACHE`` if set, else ``~/.cache/fedmm``."""
    root = os.environ.get("FEDMM_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "fedmm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz beside its final place, then rename it: a crash never leaves half a cache, and
    concurrent builders each write their own temporary file (created with the user's umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
