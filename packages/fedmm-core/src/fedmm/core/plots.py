"""PNG plots of runs: accuracy vs round, cumulative bytes vs accuracy, and overlays for ``compare``.

In an overlay a multi-seed run (a list of per-seed metrics rows) is drawn as its mean curve with
a shaded 95 % band (Student-t half-width over the seeds, :func:`fedmm.core.stats.ci95`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from fedmm.core.stats import ci95, mean

# Metrics rows of one run, or one list of rows per seed of a multi-seed run.
Rows = Sequence[Mapping[str, Any]]
Curves = Rows | Sequence[Rows]


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


def _per_seed(curves: Curves) -> list[Rows] | None:
    """The per-seed rows of a multi-seed run; None for one run's rows."""
    items = list(curves)
    if items and not isinstance(items[0], Mapping):
        return [list(rows) for rows in items]  # type: ignore[arg-type]
    return None


def mean_curve(
    per_seed: Sequence[Rows], key: str = "accuracy"
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Rounds evaluated in every seed, the mean of ``key`` there, its 95 % half-width (0 for a single
    seed) and the mean cumulative MiB exchanged up to that round."""
    points: list[dict[int, tuple[float, float]]] = []
    for rows in per_seed:
        total, seen = 0.0, {}
        for r in rows:
            total += float(r.get("ledger/bytes_down") or 0) + float(r.get("ledger/bytes_up") or 0)
            if r.get(key) is not None:
                seen[int(r["round"])] = (float(r[key]), total / 2**20)
        points.append(seen)
    common = sorted(set.intersection(*(set(p) for p in points))) if points else []
    ys = [[p[rnd][0] for p in points] for rnd in common]
    return (
        common,
        [mean(v) for v in ys],
        [ci95(v) or 0.0 for v in ys],
        [mean([p[rnd][1] for p in points]) for rnd in common],
    )


def draw_compare(runs: Mapping[str, Curves]) -> Figure:
    """The overlay of :func:`plot_compare` as a matplotlib figure (the caller closes it)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curves in runs.items():
        per_seed = _per_seed(curves)
        if per_seed is None:
            a1.plot(*_series(curves, "accuracy"), label=name)  # type: ignore[arg-type]
            a2.plot(*_cumulative_bytes(curves), label=name)  # type: ignore[arg-type]
            continue
        rounds, ys, half, mib = mean_curve(per_seed)
        low = [y - h for y, h in zip(ys, half, strict=True)]
        high = [y + h for y, h in zip(ys, half, strict=True)]
        label = f"{name} (mean of {len(per_seed)} seeds, 95 % CI)"
        for ax, xs in ((a1, rounds), (a2, mib)):
            (line,) = ax.plot(xs, ys, label=label)
            if len(per_seed) > 1:
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    a1.set_xlabel("round")
    a2.set_xlabel("cumulative bytes exchanged (MiB)")
    for ax in (a1, a2):
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_compare(runs: Mapping[str, Curves], out: Path) -> Path:
    """Overlay accuracy vs round and accuracy vs cumulative bytes of several runs.

    A value is one run's metrics rows, or a list of per-seed rows (drawn as the mean curve with
    a shaded 95 % band).
    """
    fig = draw_compare(runs)
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
