"""PNG plots of runs: accuracy vs round, cumulative bytes vs accuracy, and overlays for ``compare``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(key) is not None:
            xs.append(int(r["round"]))
            ys.append(float(r[key]))
    return xs, ys


def _cumulative_bytes(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    total, xs, ys = 0.0, [], []
    for r in rows:
        total += float(r.get("ledger/bytes_down") or 0) + float(r.get("ledger/bytes_up") or 0)
        if r.get("accuracy") is not None:
            xs.append(total / 2**20)
            ys.append(float(r["accuracy"]))
    return xs, ys


def plot_run(rows: Sequence[Mapping[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """Write ``accuracy.png`` and ``bytes_vs_accuracy.png`` for one run."""
    out_dir = Path(out_dir)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({k for r in rows for k in r if k == "accuracy" or k.startswith("accuracy/")}):
        xs, ys = _series(rows, key)
        ax.plot(
            xs, ys, label="all modalities" if key == "accuracy" else "only " + key.split("/", 1)[1] + " given"
        )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(out_dir / "accuracy.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    written.extend(plot_technique_series(rows, out_dir, title))

    fig, ax = plt.subplots(figsize=(6, 4))
    xs2, ys2 = _cumulative_bytes(rows)
    ax.plot(xs2, ys2, marker=".")
    ax.set_xlabel("cumulative bytes exchanged (MiB)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out_dir / "bytes_vs_accuracy.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def plot_compare(runs: Mapping[str, Sequence[Mapping[str, Any]]], out: Path) -> Path:
    """Overlay accuracy vs round and accuracy vs cumulative bytes of several runs."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in runs.items():
        a1.plot(*_series(rows, "accuracy"), label=name)
        a2.plot(*_cumulative_bytes(rows), label=name)
    a1.set_xlabel("round")
    a2.set_xlabel("cumulative bytes exchanged (MiB)")
    for ax in (a1, a2):
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def technique_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Numeric per-round metrics that techniques add, grouped by prefix.

    ``fedmfs/shapley/image`` and ``fedmfs/shapley/audio`` form the group ``fedmfs/shapley``.
    Core's own keys (accuracy, loss, ledger) are left out.
    """
    groups: dict[str, list[str]] = {}
    for row in rows:
        for key, value in row.items():
            if "/" not in key or key.startswith(("ledger/", "accuracy/")):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            prefix = key.rsplit("/", 1)[0]
            if key not in groups.setdefault(prefix, []):
                groups[prefix].append(key)
    return groups


def plot_technique_series(rows: Sequence[Mapping[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """One PNG per group of technique metrics (e.g. per-modality Shapley importance over rounds)."""
    written = []
    for prefix, keys in sorted(technique_series(rows).items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in sorted(keys):
            ax.plot(*_series(rows, key), label=key.rsplit("/", 1)[1])
        ax.set_xlabel("round")
        ax.set_ylabel(prefix)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(Path(out_dir) / f"{prefix.replace('/', '_')}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
