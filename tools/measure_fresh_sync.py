"""Measure what a newcomer's `uv sync` costs: a fresh clone, an empty uv cache, wall time and disk.

    python tools/measure_fresh_sync.py            # prints one JSON object

It clones the current commit into a temporary folder and syncs there with a temporary, empty
cache, so nothing already downloaded on this machine is reused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        clone, cache = Path(tmp) / "clone", Path(tmp) / "cache"
        subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
        start = time.perf_counter()
        subprocess.run(
            ["uv", "sync", "--frozen", "--cache-dir", str(cache)], cwd=clone, check=True, capture_output=True
        )
        seconds = time.perf_counter() - start
        result = {
            "uv_sync_seconds": round(seconds, 1),
            "venv_gib": round(du(clone / ".venv") / 2**30, 2),
            "downloaded_cache_gib": round(du(cache) / 2**30, 2),
            "uv": subprocess.run(["uv", "--version"], capture_output=True, text=True).stdout.strip(),
        }
        shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
