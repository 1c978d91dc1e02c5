"""Config → dataset, model, strategy → run folder (``fedmm run``).

A run folder holds ``config.json`` (the validated config), ``metrics.jsonl`` (one line per round:
accuracy, loss, per-modality accuracy, ledger totals), ``summary.json``, PNG plots and
``checkpoint/`` (safetensors + JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedmm.core.config import RunConfig, build_technique
from fedmm.core.data.registry import load as load_dataset
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.federation import ClientTrainer, Federation, History
from fedmm.core.measure import peak_rss_bytes
from fedmm.core.models.model import late_fusion
from fedmm.core.protocol import FedAvg, Strategy


def build_dataset(cfg: RunConfig) -> FederatedDataset:
    d = cfg.data
    return load_dataset(
        d.name,
        clients=d.clients,
        partition=d.partition,
        alpha=d.alpha,
        unimodal_fraction=d.unimodal_fraction,
        missing_rate=d.missing_rate,
        incomplete_fraction=d.incomplete_fraction,
        missing_label_rate=d.missing_label_rate,
        label_noise_rate=d.label_noise_rate,
        validation_fraction=d.validation_fraction,
        min_samples=d.min_samples,
        seed=cfg.run.seed,
        only_modalities=d.modalities,
        **d.options,
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


def build_strategy(cfg: RunConfig) -> Strategy:
    s = cfg.strategy
    techniques = [build_technique(t, i) for i, t in enumerate(cfg.techniques)]
    if s.name != "fedavg":
        raise ConfigError(f"[strategy].name: unknown strategy {s.name!r}")
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
    )


def build_federation(cfg: RunConfig, data: FederatedDataset | None = None) -> Federation:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    data = data if data is not None else build_dataset(cfg)
    strategy = build_strategy(cfg)
    return Federation(
        build_model(cfg, data, strategy), data, strategy, seed=cfg.run.seed, eval_every=cfg.run.eval_every
    )


def new_run_dir(cfg: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.run.output_dir) / f"{cfg.run.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


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
    }


def run_config(
    cfg: RunConfig,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    make_trainer: Callable[[Federation], ClientTrainer] | None = None,
) -> tuple[Path, History]:
    """Run ``cfg`` into ``run_dir`` (a new folder under ``[run].output_dir`` by default).

    ``make_trainer(fed)`` replaces how each round's clients are run (a Flower deployment
    ServerApp passes its message exchange); otherwise ``[run].engine`` picks the engine.
    """
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    if resume and not (run_dir / "checkpoint").exists():
        raise ConfigError(f"--resume: {run_dir} has no checkpoint/ to resume from")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if resume and cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        now = cfg.model_dump(mode="json")
        # Only the number of rounds may change: a resumed run may be extended.
        saved["run"].pop("rounds", None)
        now["run"].pop("rounds", None)
        if saved != now:
            raise ConfigError(
                f"--resume: the config differs from the one {run_dir} was started with "
                "(only [run].rounds may change); start a new run folder instead"
            )
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    data = build_dataset(cfg)
    fed = build_federation(cfg, data)
    trainer = make_trainer(fed) if make_trainer is not None else None
    metrics_path = run_dir / "metrics.jsonl"

    def on_round(_: dict[str, Any]) -> None:
        write_jsonl(metrics_path, fed.history.rounds)

    start = time.perf_counter()
    history = fed.run(
        cfg.run.rounds,
        progress=progress,
        checkpoint_dir=run_dir / "checkpoint",
        checkpoint_every=cfg.run.checkpoint_every or cfg.run.rounds,
        resume=resume,
        on_round=on_round,
        engine="inprocess" if trainer is not None else cfg.run.engine,
        flower=cfg.flower.model_dump() if trainer is None and cfg.run.engine == "flower" else None,
        trainer=trainer,
    )
    write_jsonl(metrics_path, history.rounds)
    summary = summarize(history, cfg, data, time.perf_counter() - start)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    from fedmm.core.plots import plot_run

    plot_run(history.rounds, run_dir, title=cfg.run.name)
    return run_dir, history


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Metrics rows and summary of a finished run folder."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
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
