"""The experiment harness: every ``fedmm bench`` reports through it.

A benchmark is a :class:`Benchmark`: a protocol (its module docstring: data, arms, rounds, seeds,
budget, metric, smoothing, target) and a function that runs **one seed** of it. The harness runs
that function on every seed, so every arm runs on every seed, and returns one JSON-able record:

* each numeric key ``K`` of the per-seed records becomes the mean over seeds, with ``K_ci95``
  (half-width of a 95 % Student-t interval, :func:`fedmm.core.stats.ci95`), ``K_per_seed`` and
  ``seeds`` beside it (booleans become the fraction of seeds where they held);
* every arm recorded with :meth:`SeedRun.arm` adds its budget read from its ledger —
  ``steps_<arm>``, ``flops_<arm>`` (all the clients' measured work, hooks included),
  ``rounds_<arm>`` and ``clients_round1_<arm>`` (how many clients trained in the first round),
  and beside them the server's work, ``server_flops_<arm>`` / ``server_seconds_<arm>`` —
  and where arms of one comparison differ by more than :data:`BUDGET_TOLERANCE` on a measure the
  method does not claim to save, the record lists them under ``unequal_budget``;
* the benchmark's ``finish`` then derives its targets from the means (never from a best seed).

Timing comparisons use :func:`paired_timing` (sides interleaved, repeated; median ratio with its
min and max). Curves that end in a time-to-target use :func:`time_to_target` (a trailing moving
average, so one lucky evaluation does not count as reaching the target).

Seeds: a benchmark must not depend on which seeds it is given — datasets keep their own fixed
data seed, the run seed (partition, initial weights, sampling) varies. Hyper-parameters are
chosen on seeds 0–4 only; targets are judged on other seeds.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedmm.core.errors import ConfigError
from fedmm.core.stats import parse_seeds, summarize_seeds

Mode = Literal["smoke", "quick", "full"]
MODES: tuple[Mode, ...] = ("smoke", "quick", "full")
# Arms whose budgets differ by more than this (relative) are listed under ``unequal_budget``.
BUDGET_TOLERANCE = 0.05
BUDGET_MEASURES = ("steps", "flops", "rounds", "clients_round1")


@dataclass(frozen=True)
class _ArmInfo:
    group: str
    claims: frozenset[str]


@dataclass
class SeedRun:
    """What a benchmark's per-seed function is handed: the seed, the mode, where to draw plots,
    and :meth:`arm` to record each arm's budget from its ledger."""

    seed: int
    mode: Mode
    plots_dir: Path | None = None
    progress: bool = False
    shared: Any = None
    arms: dict[str, _ArmInfo] = field(default_factory=dict)
    # ``--data-path``: a user's copy of the benchmark's real data (benchmarks that take one).
    data_path: Path | None = None
    budgets: dict[str, float] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        """True for ``--quick`` and for the smoke mode (the smallest runs)."""
        return self.mode != "full"

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    def pick(self, *, smoke: Any, quick: Any, full: Any) -> Any:
        """The value for this mode (rounds, clients, ...)."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.mode]

    def arm(
        self,
        name: str,
        history: Any,
        *,
        group: str = "",
        claims: Sequence[str] = (),
    ) -> None:
        """Record arm ``name``'s budget from ``history`` (a :class:`~fedmm.core.federation.History`).

        Arms of one ``group`` are compared with the group's first recorded arm (its baseline).
        ``claims``: the measures (of ``steps``, ``flops``, ``rounds``, ``clients_round1``) where
        this arm is cheaper by design — the saving its method claims, or a smaller model (a
        unimodal arm) — so a lower figure there is not an unfair budget. A higher one still is.
        """
        bad = set(claims) - set(BUDGET_MEASURES)
        if bad:
            raise ValueError(f"unknown budget measure(s) {sorted(bad)}; use {BUDGET_MEASURES}")
        info = _ArmInfo(group, frozenset(claims))
        if self.arms.get(name, info) != info:
            raise ValueError(f"arm {name!r} recorded twice with different groups or claims")
        self.arms[name] = info
        totals = history.ledger.totals()
        flops = totals.get("client_flops", totals.get("flops", 0.0))
        rounds = history.rounds
        self.budgets[f"steps_{name}"] = float(totals.get("steps", 0.0))
        self.budgets[f"flops_{name}"] = float(flops)
        self.budgets[f"rounds_{name}"] = float(len(rounds))
        first = rounds[0] if rounds else {}
        self.budgets[f"clients_round1_{name}"] = float(first.get("selected", 0) - first.get("dropped", 0))
        # The server's work is reported beside the budget (FedAvg's is near zero by design, so it
        # is not one of the measures compared for fairness).
        self.budgets[f"server_flops_{name}"] = float(totals.get("server_flops", 0.0))
        self.budgets[f"server_seconds_{name}"] = float(totals.get("server_seconds", 0.0))


PerSeed = Callable[[SeedRun], Mapping[str, Any]]
# One finished seed: its record (figures and budgets) and its arms' groups and claims.
_SeedResult = tuple[dict[str, Any], dict[str, _ArmInfo]]
Finish = Callable[[dict[str, Any]], None]


@dataclass
class Benchmark:
    """A registered benchmark: ``Benchmark("fedmfs", run_seed, quick_seeds=(0, 1, 2), ...)``.

    Calling it (``bench(quick=True, seeds=(0, 1, 2))``) runs ``run_seed`` once per seed and
    returns the aggregated record. ``setup(run)`` (optional) builds what every seed shares
    (a loaded dataset) once; each :class:`SeedRun` carries it as ``shared``. ``finish(record)``
    adds figures derived from the means (gains, targets met). ``headline``: the keys the docs
    show for this benchmark, in order.
    """

    name: str
    run_seed: PerSeed
    quick_seeds: tuple[int, ...] = (0, 1, 2)
    full_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    headline: tuple[str, ...] = ()
    finish: Finish | None = None
    setup: Callable[[SeedRun], Any] | None = None
    protocol: str = "1"
    draws_plots: bool = False
    # Run each seed in a fresh Python process (a memory benchmark: what one seed leaves allocated
    # must not count in the next seed's figures). The records meet in the checkpoint folder.
    isolate_seeds: bool = False
    # Whether ``--data-path DIR`` (a user's copy of the real data) is accepted; its use is part of
    # a seed record's identity, so seeds run on different data never merge.
    takes_data_path: bool = False

    def __call__(
        self,
        quick: bool = False,
        *,
        seeds: Sequence[int] | str | None = None,
        mode: Mode | None = None,
        progress: bool = False,
        plots_dir: str | os.PathLike[str] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool = False,
        data_path: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Run every seed and aggregate.

        ``data_path``: the folder of the benchmark's real data, for benchmarks that take one
        (``takes_data_path``; the others refuse it).

        ``checkpoint``: a folder where each finished seed's record is saved
        (``seed-N.json``, with the commit, date and machine it ran on), so a run that stops —
        killed, out of time, a crash in seed 4 — loses at most the seed in progress.
        ``resume=True`` takes the seeds already saved there (same benchmark, mode and protocol)
        and runs only the others; without it a folder that already holds seeds is refused
        rather than silently reused or overwritten.
        """
        import torch

        from fedmm.core.console import bar

        mode = mode or ("quick" if quick else "full")
        if mode not in MODES:
            raise ConfigError(f"unknown benchmark mode {mode!r}; use one of {MODES}")
        chosen = parse_seeds(seeds) if seeds is not None else self.default_seeds(mode)
        if data_path is not None and not self.takes_data_path:
            raise ConfigError(f"benchmark {self.name!r} reads no data folder; leave out --data-path")
        data = Path(data_path).expanduser().resolve() if data_path is not None else None
        if data is not None and not data.is_dir():
            raise ConfigError(f"--data-path {data_path}: not a folder")
        if self.isolate_seeds and data is not None:
            raise ConfigError(
                f"benchmark {self.name!r} runs seeds in their own processes and takes no --data-path"
            )
        if plots_dir is not None and not self.draws_plots:
            raise ConfigError(f"benchmark {self.name!r} draws no plots; leave out --plots")
        plots = Path(plots_dir) if plots_dir is not None else None
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
        store = None
        if checkpoint is not None:
            store = _SeedStore(
                Path(checkpoint), self.name, mode, self.protocol, None if data is None else str(data)
            )
        if resume and store is None:
            raise ConfigError("resume needs a checkpoint folder (--resume goes with -o FILE)")
        saved = store.load(chosen, resume=resume) if store is not None else {}
        torch.set_num_threads(1)  # small models: one thread per process is fastest on few cores
        start = time.perf_counter()
        todo = [s for s in chosen if s not in saved]
        done: dict[int, _SeedResult] = dict(saved)
        if self.isolate_seeds and not _in_seed_process() and todo:
            with tempfile.TemporaryDirectory(prefix=f"fedmm-{self.name}-") as scratch:
                own = store or _SeedStore(Path(scratch), self.name, mode, self.protocol)
                for seed in bar(todo, enabled=progress, desc=f"{self.name} seeds", unit="seed"):
                    done[seed] = self._run_in_fresh_process(seed, mode, own)
            todo = []
        first = SeedRun(todo[0], mode, plots, progress, data_path=data) if todo else None
        shared = self.setup(first) if self.setup and first is not None else None
        for seed in bar(todo, enabled=progress, desc=f"{self.name} seeds", unit="seed"):
            run = SeedRun(seed, mode, plots, progress, shared, data_path=data)
            record = dict(self.run_seed(run))
            clash = set(record) & set(run.budgets)
            if clash:
                raise ValueError(f"{self.name}: per-seed keys {sorted(clash)} clash with arm budgets")
            record.update(run.budgets)
            done[seed] = (_plain(record), dict(run.arms))
            if store is not None:
                store.save(seed, record, run.arms)
        records: list[dict[str, Any]] = []
        arms: dict[str, _ArmInfo] = {}
        for seed in chosen:
            record, seed_arms = done[seed]
            records.append(record)
            for name, info in seed_arms.items():
                if arms.setdefault(name, info) != info:
                    raise ValueError(f"{self.name}: arm {name!r} changed group or claims between seeds")
        out: dict[str, Any] = {
            "benchmark": self.name,
            "mode": mode,
            "quick": mode != "full",
            "protocol": self.protocol,
        }
        if data is not None:
            out["data_path"] = str(data)
        out.update(summarize_seeds(records, chosen))
        out["unequal_budget"] = unequal_budgets(out, arms)
        if self.finish is not None:
            self.finish(out)
        out["headline"] = [k for k in self.headline if k in out]
        out["seconds"] = time.perf_counter() - start
        if saved:
            # Seeds taken from the checkpoint ran earlier, perhaps at another commit: say which.
            out["resumed_seeds"] = sorted(saved)
            out["seed_meta"] = {str(s): store.meta(s) for s in chosen} if store is not None else {}
        return _plain(out, strict=True)

    def _run_in_fresh_process(self, seed: int, mode: Mode, store: _SeedStore) -> _SeedResult:
        """Run one seed in a new interpreter that saves its record into ``store``'s folder."""
        env = {**os.environ, _SEED_PROCESS: "1"}
        args = [self.run_seed.__module__, self.name, mode, str(seed), str(store.folder)]
        code = (
            "import sys; from fedmm.core.experiment import seed_process_main; seed_process_main(sys.argv[1:])"
        )
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            raise RuntimeError(f"{self.name}: seed {seed} failed in its own process:\n" + "\n".join(tail))
        return store.load([seed], resume=True)[seed]

    def default_seeds(self, mode: Mode) -> tuple[int, ...]:
        if mode == "full":
            return self.full_seeds
        if mode == "smoke":
            return self.quick_seeds[:2]
        return self.quick_seeds


_SEED_PROCESS = "FEDMM_BENCH_SEED_PROCESS"


def _in_seed_process() -> bool:
    return os.environ.get(_SEED_PROCESS) == "1"


def seed_process_main(argv: Sequence[str]) -> None:
    """Entry of a seed's own process: find the benchmark in its module and run that one seed."""
    import importlib

    module, name, mode, seed, folder = argv
    members = vars(importlib.import_module(module)).values()
    found = [b for b in members if isinstance(b, Benchmark) and b.name == name]
    if not found:
        raise SystemExit(f"no benchmark {name!r} in module {module}")
    found[0](mode=mode, seeds=[int(seed)], checkpoint=folder, resume=True)  # type: ignore[arg-type]


class _SeedStore:
    """One folder of per-seed records of one benchmark run (``seed-N.json``)."""

    def __init__(self, folder: Path, name: str, mode: str, protocol: str, data: str | None = None) -> None:
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"checkpoint {folder}: is a file; give a folder (or delete the file)")
        self.folder, self.name, self.mode, self.protocol = folder, name, mode, protocol
        self.data = data  # the --data-path the seeds ran on (None: the benchmark's own data)
        self._meta: dict[int, dict[str, Any]] = {}

    def path(self, seed: int) -> Path:
        return self.folder / f"seed-{seed}.json"

    def load(self, seeds: Sequence[int], *, resume: bool) -> dict[int, _SeedResult]:
        import json

        found = sorted(self.folder.glob("seed-*.json")) if self.folder.is_dir() else []
        if found and not resume:
            raise ConfigError(
                f"checkpoint {self.folder} already holds {len(found)} seed record(s) of an earlier run; "
                "pass --resume to keep them and run only the missing seeds, or move the folder away"
            )
        out: dict[int, _SeedResult] = {}
        for seed in seeds:
            path = self.path(seed)
            if not path.exists():
                continue
            try:
                data = json.loads(path.read_text())
                record, arms, meta = data["record"], data["arms"], data["meta"]
                want = {
                    "benchmark": self.name,
                    "mode": self.mode,
                    "protocol": self.protocol,
                    "seed": seed,
                    "data_path": self.data,
                }
                got = {k: data.get(k) for k in want}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"checkpoint {path}: not a seed record fedmm wrote ({exc}); "
                    "move it away and re-run that seed"
                ) from None
            if got != want:
                raise ConfigError(
                    f"checkpoint {path}: holds {got}, this run is {want}; "
                    "a record of another benchmark, mode, protocol or data cannot be merged; "
                    "move the folder away"
                )
            out[seed] = (
                dict(record),
                {n: _ArmInfo(str(a["group"]), frozenset(a["claims"])) for n, a in arms.items()},
            )
            self._meta[seed] = dict(meta)
        return out

    def save(self, seed: int, record: Mapping[str, Any], arms: Mapping[str, _ArmInfo]) -> None:
        import json

        meta = provenance()
        meta.pop("command", None)
        self._meta[seed] = meta
        data = {
            "benchmark": self.name,
            "mode": self.mode,
            "protocol": self.protocol,
            "seed": seed,
            "data_path": self.data,
            # NaN stays NaN here (json's extension), so a resumed seed aggregates like a fresh one.
            "record": _plain(record),
            "arms": {n: {"group": a.group, "claims": sorted(a.claims)} for n, a in arms.items()},
            "meta": meta,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(seed).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path(seed))  # atomic: a kill mid-write leaves the old file or none

    def meta(self, seed: int) -> dict[str, Any]:
        return self._meta.get(seed, {})


def _plain(value: Any, *, strict: bool = False) -> Any:
    """numpy scalars → Python numbers, tuples → lists, recursively; ``strict`` also turns NaN/inf
    into None (strict JSON), else they are kept (a checkpointed seed aggregates like a fresh one)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, strict=strict) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if strict and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def unequal_budgets(record: Mapping[str, Any], arms: Mapping[str, _ArmInfo]) -> list[dict[str, Any]]:
    """Arms whose mean budget differs from their group's baseline (first arm) by more than
    :data:`BUDGET_TOLERANCE`, except lower figures on a measure the arm claims to save."""
    out: list[dict[str, Any]] = []
    baselines: dict[str, str] = {}
    for name, info in arms.items():
        base = baselines.setdefault(info.group, name)
        if base == name:
            continue
        for measure in BUDGET_MEASURES:
            a, b = record.get(f"{measure}_{name}"), record.get(f"{measure}_{base}")
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            ratio = (1.0 if a == 0 else math.inf) if b == 0 else float(a) / float(b)
            if abs(ratio - 1.0) <= BUDGET_TOLERANCE:
                continue
            if measure in info.claims and ratio < 1.0:
                continue
            out.append({"arm": name, "baseline": base, "measure": measure, "ratio": ratio})
    return out


# -- curves -----------------------------------------------------------------------------------
def smoothed(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average: entry i is the mean of values[max(0, i-window+1) : i+1]."""
    if window < 1:
        raise ValueError("window must be >= 1")
    out: list[float] = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def time_to_target(
    costs: Sequence[float], accuracy: Sequence[float], target: float, *, window: int = 3
) -> float | None:
    """Cumulative cost at the first evaluation whose trailing ``window``-mean accuracy reaches
    ``target`` (only once ``window`` evaluations exist); None if it never does.

    ``costs[i]`` is the cost spent up to evaluation i (cumulative)."""
    if len(costs) != len(accuracy):
        raise ValueError("one cost per evaluation")
    smooth = smoothed(accuracy, window)
    for i in range(window - 1, len(smooth)):
        if smooth[i] >= target:
            return float(costs[i])
    return None


# -- timings ----------------------------------------------------------------------------------
def paired_timing(
    a: Callable[[], float | None],
    b: Callable[[], float | None],
    *,
    pairs: int = 5,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time ``a`` against ``b``, interleaved: ``warmup`` untimed pairs, then ``pairs`` pairs whose
    order alternates (A B, B A, A B, ...) so a drift in the machine's load hits both sides alike.

    Each callable runs its side once; it may return the seconds it measured itself (e.g. without
    its set-up), else the call is timed. Returns the per-pair ratios a/b: ``ratio`` (median),
    ``ratio_min``, ``ratio_max``, and both sides' seconds.
    """
    if pairs < 1:
        raise ValueError("pairs must be >= 1")

    def once(fn: Callable[[], float | None]) -> float:
        t0 = time.perf_counter()
        got = fn()
        return float(got) if got is not None else time.perf_counter() - t0

    for _ in range(warmup):
        once(a)
        once(b)
    sa: list[float] = []
    sb: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            sa.append(once(a))
            sb.append(once(b))
        else:
            sb.append(once(b))
            sa.append(once(a))
    ratios = [x / y for x, y in zip(sa, sb, strict=True)]
    return {
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
        "a_seconds": sa,
        "b_seconds": sb,
        "pairs": pairs,
    }


# -- results as data --------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Cores, the 1-minute load average when the run started, Python, torch version and the
    device the run used."""
    import torch

    device = "cpu"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        device = torch.cuda.get_device_name()
    try:
        # Timings from a loaded machine are not comparable with a quiet one's: say which it was.
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "load_average_1m": load,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command, git commit, date (UTC) and machine of a run: call it when the run starts,
    so a commit made while it runs is not credited with its figures."""
    argv = list(sys.argv if argv is None else argv)
    command = " ".join(["fedmm", *argv[1:]]) if argv and Path(argv[0]).name == "fedmm" else " ".join(argv)
    return {
        "command": command,
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
    }


def with_provenance(
    record: Mapping[str, Any], argv: Sequence[str] | None = None, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``record`` plus ``meta`` (:func:`provenance`, taken now unless given)."""
    return {**record, "meta": dict(meta) if meta is not None else provenance(argv)}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    v = float(value)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    if abs(v) >= 100:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.3f}"


def format_figure(record: Mapping[str, Any], key: str) -> str:
    """``record[key]`` as text: ``mean ± ci95`` where the record has an interval for it."""
    ci = record.get(f"{key}_ci95")
    return _fmt(record.get(key)) + (f" ± {_fmt(ci)}" if isinstance(ci, (int, float)) else "")


def results_table(record: Mapping[str, Any]) -> str:
    """A Markdown table of a benchmark record's headline keys: mean ± 95 % CI and per-seed
    values, then the arms whose budgets differ (``unequal_budget``), if any."""
    keys = list(record.get("headline") or [])
    seeds = record.get("seeds", [])
    lines = [
        f"| key | mean ± 95 % CI | per seed ({', '.join(str(s) for s in seeds)}) |",
        "|---|---|---|",
    ]
    for key in keys:
        mean = format_figure(record, key)
        per_seed = record.get(f"{key}_per_seed")
        seeds_text = ", ".join(_fmt(v) for v in per_seed) if isinstance(per_seed, list) else ""
        lines.append(f"| `{key}` | {mean} | {seeds_text} |")
    unequal = record.get("unequal_budget") or []
    if unequal:
        lines.append("")
        items = [f"`{u['arm']}` vs `{u['baseline']}`: {u['measure']} × {_fmt(u['ratio'])}" for u in unequal]
        lines.append("Unequal budgets (more than 5 % apart, not a claimed saving): " + "; ".join(items) + ".")
    return "\n".join(lines)


__all__ = [
    "BUDGET_TOLERANCE",
    "Benchmark",
    "SeedRun",
    "format_figure",
    "machine_info",
    "paired_timing",
    "provenance",
    "results_table",
    "smoothed",
    "time_to_target",
    "unequal_budgets",
    "with_provenance",
]
