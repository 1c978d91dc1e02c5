"""Config → dataset, model, strategy → run folder (``fedmm run``).

A run folder holds ``config.json`` (the validated config), ``metrics.jsonl`` (one line per round:
accuracy, loss, per-modality accuracy, ledger totals), ``summary.json``, PNG plots and
``checkpoint/`` (safetensors + JSON); ``tensorboard/`` and ``trackers.json`` where
``[run].trackers`` asks for them.

A multi-seed run folder (:func:`run_config_seeds`, ``fedmm run --seeds 0-4``) holds one such run
folder per seed, ``seed-N/``, an aggregate ``summary.json`` (mean, 95 % CI, per-seed values) and
``accuracy.png`` (the mean curve with its 95 % band). :func:`compare_runs` reads both kinds.

An existing run folder is never written over: ``resume=True`` continues it from its newest valid
checkpoint, ``overwrite=True`` removes its files first, and anything else is refused. A run that
fails before its first round is done leaves no folder behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedmm.core import checkpoint as ckpt
from fedmm.core.config import RunConfig, build_technique
from fedmm.core.data.registry import load as load_dataset
from fedmm.core.data.types import FederatedDataset
from fedmm.core.engine import Engine
from fedmm.core.errors import CheckpointError, ConfigError, RunFailedError
from fedmm.core.failures import drop_totals
from fedmm.core.federation import Federation, History
from fedmm.core.measure import peak_rss_bytes
from fedmm.core.models.model import late_fusion
from fedmm.core.protocol import FedAvg, Strategy
from fedmm.core.stats import ci95, mean, parse_seeds


def build_dataset(cfg: RunConfig, progress: bool = True) -> FederatedDataset:
    d = cfg.data
    options = dict(d.options)
    # [data].options may set the loader's own progress; -q (progress=False) silences it anyway.
    progress = bool(options.pop("progress", True)) and progress
    return load_dataset(
        d.name,
        clients=d.clients,
        partition=d.partition,
        alpha=d.alpha,
        unimodal_fraction=d.unimodal_fraction,
        subclients=d.subclients,
        client_missing_rate=d.client_missing_rate,
        missing_rate=d.missing_rate,
        incomplete_fraction=d.incomplete_fraction,
        missing_label_rate=d.missing_label_rate,
        label_noise_rate=d.label_noise_rate,
        validation_fraction=d.validation_fraction,
        validation_split=d.validation_split,
        min_samples=d.min_samples,
        seed=cfg.run.seed,
        only_modalities=d.modalities,
        progress=progress,
        **options,
    )


def build_model(cfg: RunConfig, data: FederatedDataset, strategy: Strategy | None = None) -> nn.Module:
    """The technique-owned model if a technique creates one, else core's late-fusion model."""
    torch.manual_seed(cfg.run.seed)
    m = cfg.model
    if strategy is not None:
        own = strategy.create_model(data, m.model_dump())
        if own is not None:
            return own
    return late_fusion(
        data.modalities,
        data.num_classes,
        fusion=m.fusion,
        embed_dim=m.embed_dim,
        hidden=m.hidden,
        encoders=m.encoders,
        encoder_options=m.encoder_options,
    )


def build_strategy(cfg: RunConfig, progress: bool = True) -> Strategy:
    s = cfg.strategy
    techniques = [build_technique(t, i, progress=progress) for i, t in enumerate(cfg.techniques)]
    server = None
    if s.name != "fedavg":
        from fedmm.core.algorithms.server_optimizers import server_optimizer

        server = server_optimizer(s.name, **s.server_optimizer_options())
    return FedAvg(
        techniques,
        clients_per_round=s.clients_per_round,
        fraction=s.fraction,
        min_clients=s.min_clients,
        local_epochs=s.local_epochs,
        batch_size=s.batch_size,
        lr=s.lr,
        optimizer=s.optimizer,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        server_optimizer=server,
    )


def build_federation(
    cfg: RunConfig, data: FederatedDataset | None = None, progress: bool = True
) -> Federation:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    data = data if data is not None else build_dataset(cfg, progress)
    strategy = build_strategy(cfg, progress)
    return Federation(
        build_model(cfg, data, strategy),
        data,
        strategy,
        seed=cfg.run.seed,
        eval_every=cfg.run.eval_every,
        device=cfg.run.device,
        batch_clients=cfg.run.batch_clients,
    )


def new_run_dir(cfg: RunConfig) -> Path:
    """Create and return a new, empty ``<output_dir>/<name>-<timestamp>`` folder (``-1``, ``-2``
    ... added when taken: created here, so two runs started in the same second differ)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, i = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path, i = Path(f"{base}-{i}"), i + 1


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_config` or :func:`run_config_seeds`, with where the run stands so
    that the command line can say exactly how to continue it."""

    def __init__(
        self, run_dir: Path, round_: int, checkpoint: Path | None, kept: bool, seed: int | None = None
    ) -> None:
        super().__init__(f"interrupted: {run_dir}")
        self.run_dir = run_dir
        self.round = round_  # the round under way (0: none had started)
        self.checkpoint = checkpoint  # the newest checkpoint in the folder; None when none was written
        self.kept = kept  # False when the folder was removed (nothing had been trained)
        self.seed = seed  # the seed under way, for a multi-seed run


_BOTH = (
    "--resume and --overwrite exclude each other: --resume continues the run folder, --overwrite replaces it"
)
_RESUME_NEEDS_DIR = (
    "resume=True needs the run folder to continue: pass run_dir (fedmm run --resume --run-dir DIR)"
)


def _is_run_folder(path: Path) -> bool:
    names = ("config.json", "metrics.jsonl", "summary.json", "checkpoint")
    return any((path / n).exists() for n in names) or any(
        _SEED_DIR.fullmatch(child.name) for child in path.iterdir()
    )


def _remove_contents(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _claim(run_dir: Path, overwrite: bool, resume_hint: str = "") -> None:
    """Refuse to write into a folder holding anything, except a run folder with ``overwrite``,
    whose files are removed now."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder; give another --run-dir")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    if not _is_run_folder(run_dir):
        raise ConfigError(
            f"{run_dir} is not empty and is not a fedmm run folder; give a new or empty --run-dir"
        )
    if not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume{resume_hint}, "
            "replace it with --overwrite, or give another --run-dir"
        )
    _remove_contents(run_dir)


def _resumable(cfg: RunConfig, run_dir: Path) -> ckpt.Resumable:
    """The checkpoint ``run_dir`` resumes from, after checking the folder and its config; says
    on stderr which round it is and which newer checkpoints were skipped."""
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: {run_dir} does not exist")
    if not (run_dir / "checkpoint").is_dir():
        if seed_dirs(run_dir):
            raise ConfigError(
                f"--resume: {run_dir} is a multi-seed run folder; resume it with --seeds (the same seeds)"
            )
        raise ConfigError(
            f"--resume: {run_dir} has no checkpoint/ to resume from (the run stopped before its first "
            "checkpoint); run it again with --overwrite"
        )
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        try:
            saved = json.loads(cfg_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"--resume: {cfg_path} is not valid JSON ({exc}); it records the config the run was "
                "started with: restore it, or start the run again with --overwrite"
            ) from None
        if not isinstance(saved, dict) or not isinstance(saved.get("run"), dict):
            raise ConfigError(
                f"--resume: {cfg_path} is not a fedmm run config (no [run] table); restore it, or "
                "start the run again with --overwrite"
            )
        now = cfg.model_dump(mode="json")
        # A resumed run may be extended, and trackers do not change the results.
        for key in ("rounds", "trackers"):
            saved["run"].pop(key, None)
            now["run"].pop(key, None)
        if saved != now:
            raise ConfigError(
                f"--resume: the config differs from the one {run_dir} was started with "
                "(only [run].rounds and [run].trackers may change); start a new run folder instead"
            )
    try:
        found = ckpt.newest_valid(run_dir / "checkpoint")
    except CheckpointError as exc:
        raise CheckpointError(f"--resume: {exc}; start the run again with --overwrite") from None
    for problem in found.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    print(f"resuming {run_dir} from round {found.round} ({found.path.relative_to(run_dir)})", file=sys.stderr)
    return found


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for row in rows:
            fh.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
    os.replace(tmp, path)


def summarize(history: History, cfg: RunConfig, data: FederatedDataset, seconds: float) -> dict[str, Any]:
    last = history.rounds[-1] if history.rounds else {}
    totals = history.ledger.totals()
    best = max((r["accuracy"] for r in history.rounds if "accuracy" in r), default=float("nan"))
    return {
        "name": cfg.run.name,
        "rounds": len(history.rounds),
        "final": {k: _clean(v) for k, v in last.items() if not k.startswith("ledger/")},
        "best_accuracy": _clean(best),
        "ledger_totals": totals,
        "dataset": data.describe(),
        "wall_seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "skipped_rounds": sum(1 for r in history.rounds if r.get("skipped")),
        "dropped_clients": sum(int(r.get("dropped", 0)) for r in history.rounds),
        "drop_causes": drop_totals(history.rounds),
        # Why the run trained nothing (then `fedmm run` exits non-zero); null when it trained.
        "failure": history.failure(),
    }


def run_config(
    cfg: RunConfig,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    make_engine: Callable[[Federation], Engine] | None = None,
    label: str | None = None,
) -> tuple[Path, History]:
    """Run ``cfg`` into ``run_dir`` (a new folder under ``[run].output_dir`` by default).

    A ``run_dir`` that holds anything is refused unless ``resume`` (continue it from its newest
    valid checkpoint) or ``overwrite`` (remove its files first; only a run folder's) is given.
    A run that fails before round 1 is done removes what it wrote (never a resumed folder).
    Ctrl-C is re-raised as :class:`RunInterrupted`.

    ``make_engine(fed)`` gives the engine that runs each round's clients (a Flower deployment
    ServerApp passes its :class:`~fedmm.core.flower.FlowerEngine`); otherwise ``[run].engine``
    picks it.
    ``label`` names the run for ``[run].trackers`` (default: the folder's name).

    Raises :class:`~fedmm.core.errors.RunFailedError` when the run trained nothing (see
    :meth:`History.failure`), after its metrics, summary and plots are written.
    """
    from fedmm.core.trackers import Trackers, require, round_metrics

    require(cfg.run.trackers)  # a missing extra fails before any folder or training
    if resume and overwrite:
        raise ConfigError(_BOTH)
    if resume and run_dir is None:
        raise ConfigError(_RESUME_NEEDS_DIR)
    found: ckpt.Resumable | None = None
    if run_dir is None:
        run_dir, created = new_run_dir(cfg), True
    else:
        run_dir = Path(run_dir)
        created = not run_dir.exists()
        if resume:
            found = _resumable(cfg, run_dir)
        else:
            _claim(run_dir, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    fed: Federation | None = None
    try:
        cfg_path = run_dir / "config.json"
        cfg_path.with_name("config.json.tmp").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
        os.replace(cfg_path.with_name("config.json.tmp"), cfg_path)
        data = build_dataset(cfg, progress)
        fed = build_federation(cfg, data, progress)
        if found is not None:
            fed.load_checkpoint(found.path)
        engine = make_engine(fed) if make_engine is not None else None
        metrics_path = run_dir / "metrics.jsonl"

        start = time.perf_counter()
        with Trackers(
            cfg.run.trackers, run_dir, experiment=cfg.run.name, run_name=label or run_dir.name, resume=resume
        ) as trackers:
            trackers.log_config(cfg.model_dump(mode="json"))

            def on_round(row: dict[str, Any], fed: Federation = fed) -> None:
                write_jsonl(metrics_path, fed.history.rounds)
                trackers.log_round(int(row["round"]), round_metrics(row))

            history = fed.run(
                cfg.run.rounds,
                progress=progress,
                checkpoint_dir=run_dir / "checkpoint",
                checkpoint_every=cfg.run.checkpoint_every or cfg.run.rounds,
                on_round=on_round,
                engine=engine if engine is not None else cfg.run.engine,
                flower=cfg.flower.model_dump() if engine is None and cfg.run.engine == "flower" else None,
            )
        write_jsonl(metrics_path, history.rounds)
        summary = summarize(history, cfg, data, time.perf_counter() - start)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        from fedmm.core.plots import plot_run

        plot_run(history.rounds, run_dir, title=cfg.run.name)
        failure = history.failure()
        if failure is not None:  # after every file is written: nothing is lost
            raise RunFailedError(failure, run_dir)
    except BaseException as exc:
        kept = True
        if found is None and (fed is None or not fed.history.rounds):
            # Nothing was trained: leave no folder behind (it was new, empty or overwritten).
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    _remove_contents(run_dir)
            kept = False
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, RunInterrupted):
            latest = ckpt.latest(run_dir / "checkpoint") if kept else None
            raise RunInterrupted(run_dir, fed.round if fed is not None else 0, latest, kept) from exc
        raise
    return run_dir, history


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Metrics rows and summary of a finished run folder."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        if seed_dirs(run_dir):
            raise ConfigError(f"{run_dir}: a multi-seed run folder; read it with compare_runs or read_seeds")
        raise ConfigError(f"{run_dir}: not a run folder (no metrics.jsonl)")
    rows = []
    for i, line in enumerate(metrics.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{metrics}, line {i}: not valid JSON ({exc.msg})") from None
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return rows, summary


# -- several seeds ------------------------------------------------------------------------------

_SEED_DIR = re.compile(r"seed-(\d+)")


def seed_dirs(run_dir: str | Path) -> dict[int, Path]:
    """The ``seed-N/`` run folders (with metrics) of a multi-seed run folder, by seed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}
    found = {}
    for child in run_dir.iterdir():
        match = _SEED_DIR.fullmatch(child.name)
        if match and (child / "metrics.jsonl").exists():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value))


def final_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The last evaluated round (with ``accuracy``); rounds without evaluation are skipped."""
    return next((r for r in reversed(rows) if r.get("accuracy") is not None), {})


def seed_stat(values: Sequence[Any], seeds: Sequence[int]) -> dict[str, Any]:
    """``mean``, ``ci95`` (95 % t-interval half-width, None for one seed), ``per_seed`` and the
    ``seeds`` they came from; a seed without a finite number for it is left out."""
    pairs = [(s, float(v)) for s, v in zip(seeds, values, strict=True) if _is_number(v)]
    vals = [v for _, v in pairs]
    return {
        "mean": mean(vals) if vals else None,
        "ci95": ci95(vals),
        "per_seed": vals,
        "seeds": [s for s, _ in pairs],
    }


def summarize_seed_runs(
    name: str, runs: dict[int, tuple[list[dict[str, Any]], dict[str, Any]]]
) -> dict[str, Any]:
    """The aggregate ``summary.json`` of a multi-seed run from each seed's (metrics rows, summary).

    ``final`` holds the numbers of each seed's last evaluated round, ``ledger_totals`` the run's
    measured totals, ``best_accuracy`` and ``wall_seconds`` the seeds' own; each is
    ``{"mean", "ci95", "per_seed", "seeds"}``.
    """
    seeds = list(runs)
    finals = [final_row(rows) for rows, _ in runs.values()]
    totals = [summary.get("ledger_totals", {}) for _, summary in runs.values()]

    def keys(records: list[dict[str, Any]], skip: Callable[[str], bool]) -> list[str]:
        out: list[str] = []
        for r in records:
            out.extend(k for k, v in r.items() if k not in out and not skip(k) and _is_number(v))
        return out

    final_keys = keys(finals, lambda k: k == "round" or k.startswith("ledger/"))
    return {
        "name": name,
        "seeds": seeds,
        "seed_dirs": [f"seed-{s}" for s in seeds],
        "rounds": [len(rows) for rows, _ in runs.values()],
        "final": {k: seed_stat([f.get(k) for f in finals], seeds) for k in final_keys},
        "best_accuracy": seed_stat([s.get("best_accuracy") for _, s in runs.values()], seeds),
        "ledger_totals": {
            k: seed_stat([t.get(k) for t in totals], seeds) for k in keys(totals, lambda k: False)
        },
        "wall_seconds": seed_stat([s.get("wall_seconds") for _, s in runs.values()], seeds),
    }


def run_config_seeds(
    cfg: RunConfig,
    seeds: str | Sequence[int],
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Run ``cfg`` once per seed into ``run_dir/seed-N/``; write and return the aggregate summary.

    Each seed replaces ``[run].seed``, which drives the client partition (iid / Dirichlet split),
    the simulated missing modalities, missing and noisy labels, unimodal clients and the server's
    validation hold-out, the model's initial weights, which clients each round samples, and each
    client's batch order. The central dataset itself (the samples and the test split) does not
    vary: its loader keeps its own default seed, so every seed is tested on the same test set.

    ``seeds`` is ``"0-4"``, ``"0,2,7"`` or a sequence of ints (see
    :func:`fedmm.core.stats.parse_seeds`). With ``resume``, each seed folder continues from its
    checkpoint, and a seed not begun yet (or stopped before its first checkpoint) starts anew.
    Without it an existing ``run_dir`` is refused, unless ``overwrite`` removes its files first.
    ``summary.json`` covers the seeds given. A seed that trained nothing (see
    :meth:`History.failure`) does not stop the others; it is listed under ``failed_seeds`` and left
    out of the statistics, and :class:`~fedmm.core.errors.RunFailedError` is raised once every
    file is written.
    """
    from fedmm.core.plots import plot_compare
    from fedmm.core.trackers import require

    seeds = parse_seeds(seeds)
    require(cfg.run.trackers)
    if resume and overwrite:
        raise ConfigError(_BOTH)
    if resume and run_dir is None:
        raise ConfigError(_RESUME_NEEDS_DIR)
    if run_dir is None:
        run_dir, created = new_run_dir(cfg), True
    else:
        run_dir = Path(run_dir)
        created = not run_dir.exists()
        if resume and not run_dir.is_dir():
            raise ConfigError(f"--resume: {run_dir} does not exist")
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(
                f"{run_dir} is a single-seed run folder; give --seeds a new run folder "
                "(or resume this one without --seeds)"
            )
        if not resume:
            _claim(run_dir, overwrite, resume_hint=" (and the same --seeds)")
    runs: dict[int, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    failed: dict[int, str] = {}
    for seed in seeds:
        seed_cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": seed})})
        seed_dir = run_dir / f"seed-{seed}"
        again = resume and (seed_dir / "checkpoint").exists()
        anew = resume and not again and seed_dir.exists()
        if anew:
            print(f"{seed_dir} has no checkpoint; starting it anew", file=sys.stderr)
        try:
            run_config(
                seed_cfg,
                seed_dir,
                resume=again,
                overwrite=anew,
                progress=progress,
                label=f"{run_dir.name}/seed-{seed}",
            )
        except RunFailedError as exc:  # the other seeds still run; the run fails at the end
            failed[seed] = exc.failure
            continue
        except BaseException as exc:
            if created:  # a new multi-seed folder goes when no seed folder is left in it
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            if isinstance(exc, RunInterrupted):
                kept = run_dir.exists()
                raise RunInterrupted(run_dir, exc.round, exc.checkpoint, kept, seed=seed) from exc
            raise
        runs[seed] = read_run(seed_dir)
    summary = summarize_seed_runs(cfg.run.name, runs)
    # A seed that trained nothing is left out of the statistics (its untrained accuracy is no result).
    summary["failed_seeds"] = {str(s): text for s, text in failed.items()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if runs:
        plot_compare(
            {f"{cfg.run.name} ({len(runs)} seeds)": [rows for rows, _ in runs.values()]},
            run_dir / "accuracy.png",
        )
    if failed:
        first = next(iter(failed))
        names = ", ".join(str(s) for s in failed)
        raise RunFailedError(
            f"{len(failed)} of {len(seeds)} seeds failed (seed{'s' if len(failed) > 1 else ''} {names}); "
            f"seed {first}: {failed[first]}\n"
            f"{run_dir / 'summary.json'} covers the other seeds"
            if runs
            else f"every seed failed ({names}); seed {first}: {failed[first]}",
            run_dir,
        )
    return run_dir, summary


def read_seeds(run_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """Metrics rows of each seed of a multi-seed run folder."""
    found = seed_dirs(run_dir)
    if not found:
        raise ConfigError(f"{run_dir}: not a multi-seed run folder (no seed-N/ folders with metrics.jsonl)")
    return {seed: read_run(path)[0] for seed, path in found.items()}


@dataclass(frozen=True)
class ComparedRun:
    """One line of ``fedmm compare``: a run folder, plain or multi-seed.

    For a multi-seed folder the numbers are means over its seeds and the ``*_ci95`` fields their
    95 % half-widths; a plain run has ``seeds == ()`` and no intervals.
    """

    name: str
    path: Path
    seeds: tuple[int, ...]
    rows: list[list[dict[str, Any]]] = field(repr=False)  # metrics rows, one list per seed
    rounds: tuple[int, ...]
    final_accuracy: float | None
    final_accuracy_ci95: float | None
    best_accuracy: float | None
    best_accuracy_ci95: float | None
    mib_up: float
    mib_down: float
    gflops: float

    @property
    def curves(self) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """What :func:`fedmm.core.plots.plot_compare` draws: the rows, or the rows of each seed."""
        return self.rows if self.seeds else self.rows[0]


def compare_runs(paths: Sequence[str | Path]) -> list[ComparedRun]:
    """Read run folders (plain or multi-seed, mixed) into what ``fedmm compare`` prints."""
    out: list[ComparedRun] = []
    names: set[str] = set()
    for path in paths:
        path = Path(path)
        if (path / "metrics.jsonl").exists() or not seed_dirs(path):
            seeds: tuple[int, ...] = ()
            per_seed = [read_run(path)[0]]
        else:
            by_seed = read_seeds(path)
            seeds, per_seed = tuple(by_seed), list(by_seed.values())
        name, i = path.name or str(path), 2
        while name in names:  # the same folder name twice stays two lines of the plot
            name, i = f"{path.name} ({i})", i + 1
        names.add(name)
        finals, bests = [], []
        for rows in per_seed:
            accs = [float(r["accuracy"]) for r in rows if _is_number(r.get("accuracy"))]
            finals.append(accs[-1] if accs else None)
            bests.append(max(accs) if accs else None)
        fin = seed_stat(finals, range(len(per_seed)))
        best = seed_stat(bests, range(len(per_seed)))

        def total(key: str, rows_per_seed: list[list[dict[str, Any]]] = per_seed) -> float:
            return mean([sum(float(r.get(key) or 0) for r in rows) for rows in rows_per_seed])

        out.append(
            ComparedRun(
                name=name,
                path=path,
                seeds=seeds,
                rows=per_seed,
                rounds=tuple(len(rows) for rows in per_seed),
                final_accuracy=fin["mean"],
                final_accuracy_ci95=fin["ci95"] if seeds else None,
                best_accuracy=best["mean"],
                best_accuracy_ci95=best["ci95"] if seeds else None,
                mib_up=total("ledger/bytes_up") / 2**20,
                mib_down=total("ledger/bytes_down") / 2**20,
                gflops=total("ledger/flops") / 1e9,
            )
        )
    return out
