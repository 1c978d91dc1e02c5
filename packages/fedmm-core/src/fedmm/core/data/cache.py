"""Files: where built datasets are cached on disk, atomic cache writes, checked text reads."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

from fedmm.core.errors import DataFileError


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


def read_text(path: Path, encoding: str, what: str) -> str:
    """Read a text file; a bad byte or an I/O error becomes a DataFileError naming file and line."""
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataFileError(path, f"{what} has a byte that is not {encoding}", line) from exc
    except OSError as exc:
        raise DataFileError(path, f"cannot read {what}: {exc}") from exc
