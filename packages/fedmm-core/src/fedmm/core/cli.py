"""The ``fedmm`` command line: run, compare, bench, datasets.

Errors fedmm raises on purpose (bad config, data file, argument) are printed as one clear
message with exit code 2, never as a traceback. A run that finished but trained nothing (every
round skipped, or a round that lost every selected client to one cause) exits with 3 after
writing its run folder; an interrupted one with 130.

Messages go to stderr through :mod:`logging` above the progress bar; ``-q`` leaves only
warnings (no bars), ``-v`` adds one line per dropped client.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmm.core.errors import ConfigError, FedmmError

if TYPE_CHECKING:
    from fedmm.core.runner import RunInterrupted


def _cmd_run(args: argparse.Namespace) -> int:
    from fedmm.core.config import load_config
    from fedmm.core.runner import run_config, run_config_seeds
    from fedmm.core.stats import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if args.resume and not args.run_dir:
        raise ConfigError("--resume needs --run-dir DIR: the run folder to continue")
    cfg = load_config(args.config, args.set or ())
    updates: dict[str, Any] = {}
    if args.rounds is not None:
        updates["rounds"] = args.rounds
    if args.engine is not None:
        updates["engine"] = args.engine
    if updates:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=updates)})
    run_dir = Path(args.run_dir) if args.run_dir else None
    if seeds is not None:
        run_dir, summary = run_config_seeds(
            cfg, seeds, run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
        )
        acc = summary["final"].get("accuracy")
        for seed, value in zip(acc["seeds"] if acc else [], acc["per_seed"] if acc else [], strict=True):
            print(f"seed {seed}: final test accuracy {value:.4f}")
        print(f"run folder: {run_dir}")
        if acc and acc["mean"] is not None:
            n = len(acc["seeds"])
            ci, what = (
                (f" ± {acc['ci95']:.4f}", f"mean ± 95 % CI over {n} seeds")
                if acc["ci95"] is not None
                else ("", "one seed: no interval")
            )
            print(f"final test accuracy: {acc['mean']:.4f}{ci} ({what})")
        return 0
    run_dir, history = run_config(
        cfg, run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
    )
    last = history.rounds[-1] if history.rounds else {}
    acc1 = last.get("accuracy")
    print(f"run folder: {run_dir}")
    if acc1 is not None:
        print(f"final test accuracy: {acc1:.4f}")
    return 0


def _interrupted_run(args: argparse.Namespace, stop: RunInterrupted) -> str:
    """What Ctrl-C of ``fedmm run`` says: the exact command that continues the run, or that none can."""
    where = f" in round {stop.round}" if stop.round else ""
    if stop.seed is not None:
        where += f" of seed {stop.seed}" if where else f" in seed {stop.seed}"
    if not stop.kept:
        return f"fedmm: interrupted{where}; no checkpoint was written and no run folder was kept"
    if stop.checkpoint is None and stop.seed is None:
        return (
            f"fedmm: interrupted{where} before any checkpoint was written, so {stop.run_dir} cannot be "
            "resumed ([run].checkpoint_every sets how often one is written); run it again with --overwrite"
        )
    command = ["fedmm", "run", args.config, "--run-dir", str(stop.run_dir), "--resume"]
    if args.seeds is not None:
        command += ["--seeds", args.seeds]
    for item in args.set or ():
        command += ["--set", item]
    if args.rounds is not None:
        command += ["--rounds", str(args.rounds)]
    if args.engine is not None:
        command += ["--engine", args.engine]
    if stop.checkpoint is None:
        state = f"seed {stop.seed} had no checkpoint yet and starts again; the finished seeds are kept"
    else:
        state = f"the last checkpoint is of round {int(stop.checkpoint.name.removeprefix('round-'))}"
        state += f" ({stop.checkpoint})"
    return f"fedmm: interrupted{where}; {state}. Continue with:\n  {shlex.join(command)}"


def _mean_ci(value: float | None, half: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" ± {half:.4f}" if half is not None else "")


def _cmd_compare(args: argparse.Namespace) -> int:
    from fedmm.core.plots import plot_compare
    from fedmm.core.runner import compare_runs

    compared = compare_runs(args.runs)
    header = (
        f"{'run':40s} {'seeds':>5s} {'rounds':>6s} {'final acc':>15s} {'best acc':>15s} "
        f"{'MiB up':>9s} {'MiB down':>9s} {'GFLOPs':>9s}"
    )
    print(header)
    print("-" * len(header))
    for run in compared:
        lo, hi = min(run.rounds), max(run.rounds)
        rounds = str(lo) if lo == hi else f"{lo}-{hi}"
        seeds = str(len(run.seeds)) if run.seeds else "-"
        final = _mean_ci(run.final_accuracy, run.final_accuracy_ci95)
        best = _mean_ci(run.best_accuracy, run.best_accuracy_ci95)
        print(
            f"{run.name[:40]:40s} {seeds:>5s} {rounds:>6s} {final:>15s} {best:>15s} "
            f"{run.mib_up:9.2f} {run.mib_down:9.2f} {run.gflops:9.2f}"
        )
    if any(run.seeds for run in compared):
        print("multi-seed runs: mean ± half-width of the 95 % t-interval over their seeds")
    out = Path(args.output)
    plot_compare({run.name: run.curves for run in compared}, out)
    print(f"overlay plot: {out}")
    return 0


def benchmarks() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="fedmm.benchmarks")}


def _cmd_bench(args: argparse.Namespace) -> int:
    from fedmm.core.experiment import Benchmark, Mode, provenance, with_provenance

    found = benchmarks()
    if args.name in (None, "list"):
        for name in sorted(found):
            print(name)
        return 0
    if args.name not in found:
        raise ConfigError(f"unknown benchmark {args.name!r}; available: {', '.join(sorted(found))}")
    if args.quick and args.smoke:
        raise ConfigError("--quick and --smoke exclude each other; give one")
    bench = found[args.name].load()
    if not isinstance(bench, Benchmark):
        raise FedmmError(
            f"benchmark {args.name!r} ({found[args.name].value}) is not a fedmm.core.experiment.Benchmark; "
            "every benchmark must report through the harness"
        )
    out_path = Path(args.output) if args.output else None
    if out_path is not None and out_path.is_dir():
        raise ConfigError(f"-o {out_path}: is a folder; give a file path such as {out_path / args.name}.json")
    mode: Mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    # Each finished seed is saved beside the output, so a stopped run resumes (--resume)
    # instead of starting over; the folder goes once the whole result is written.
    checkpoint = out_path.with_suffix(".seeds") if out_path is not None else None
    if args.resume and checkpoint is None:
        raise ConfigError("--resume continues a run that wrote with -o FILE: give the same -o FILE")
    meta = provenance(["fedmm", *args.argv])
    result = bench(
        mode=mode,
        seeds=args.seeds,
        progress=not args.quiet,
        plots_dir=args.plots,
        checkpoint=checkpoint,
        resume=args.resume,
        data_path=args.data_path,
    )
    result = with_provenance(result, meta=meta)
    if out_path is not None and checkpoint is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(out_path.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        tmp.replace(out_path)
        shutil.rmtree(checkpoint, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from fedmm.core.data import registry

    if args.action == "list":
        for name, info in sorted(registry.available().items()):
            print(f"{name:12s} {info.summary}")
        return 0
    if not args.name:
        raise ConfigError("fedmm datasets build NAME: give a dataset name (see `fedmm datasets list`)")
    path = registry.build(args.name, rebuild=args.rebuild)
    print(f"built {args.name}: {path}")
    return 0


def _cmd_flower_app(args: argparse.Namespace) -> int:
    from fedmm.core.config import load_config

    try:
        from fedmm.core.flower.local import write_app
    except ImportError:
        raise FedmmError('fedmm flower-app needs Flower: pip install "fedmm-core[flower]"') from None
    config = Path(args.config).resolve()
    load_config(config)  # refuse a broken config now, not on the SuperLink
    path = write_app(
        args.directory,
        config=str(config),
        out=str(Path(args.out).resolve()),
        **{"round-timeout": args.round_timeout, "min-nodes": args.min_nodes},
    )
    print(f"Flower App: {path}")
    print(f"run it with: flwr run {path} <superlink-connection> --stream")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from fedmm.core.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedmm", description="Federated multimodal learning.")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each dropped client (not only each round's count)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a TOML config into a run folder")
    p.add_argument("config", help="path to a run config (.toml)")
    p.add_argument("--run-dir", help="run folder (default: a new one under [run].output_dir)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its newest valid checkpoint",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --run-dir (its files are removed first); without it, or --resume, "
        "an existing run folder is refused",
    )
    p.add_argument("--rounds", type=int, help="override [run].rounds")
    p.add_argument("--engine", choices=["inprocess", "flower"], help="override [run].engine")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set strategy.lr=0.1 --set techniques.0.gamma=2 "
        "(a TOML value, else a string; repeatable)",
    )
    p.add_argument(
        "--seeds",
        help="run once per seed (e.g. 0-4 or 0,1,2) into RUN/seed-N/ and write RUN/summary.json "
        "with mean and 95 %% CI of each final metric",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages, only warnings")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("compare", help="compare run folders: table + overlay plot")
    p.add_argument("runs", nargs="+", help="run folders, plain or multi-seed (mean ± 95 %% CI)")
    p.add_argument("-o", "--output", default="compare.png", help="overlay plot path (default compare.png)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("bench", help="run a benchmark; its JSON result is the last line printed")
    p.add_argument("name", nargs="?", help="benchmark name, or 'list'")
    p.add_argument("--quick", action="store_true", help="the short variant (minutes on 2 cores)")
    p.add_argument("--smoke", action="store_true", help="the smallest run that exercises every arm (tests)")
    p.add_argument(
        "--seeds", help="seeds to run every arm on: 0,1,2 or 0-4 (default: the benchmark's own, see its docs)"
    )
    p.add_argument(
        "-o", "--output", help="also write the JSON result (with command, commit, date, machine) to this file"
    )
    p.add_argument("--plots", help="write the benchmark's curve plots to this folder (where it draws any)")
    p.add_argument(
        "--data-path",
        help="your copy of the benchmark's real data (e.g. a 'UCI HAR Dataset' folder), where it takes one",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the seeds a stopped run saved beside -o FILE (FILE's name with .seeds) and run the rest",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages, only warnings")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("datasets", help="list datasets or build one's cache")
    p.add_argument("action", choices=["list", "build"])
    p.add_argument("name", nargs="?")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser(
        "flower-app", help="write a Flower App folder that runs a config on Flower's deployment engine"
    )
    p.add_argument("directory", help="the app folder to write (holds pyproject.toml)")
    p.add_argument(
        "--config", required=True, help="the run config; the same path must exist on every machine"
    )
    p.add_argument(
        "--out", required=True, help="run folder the ServerApp writes (on the SuperLink's machine)"
    )
    p.add_argument("--round-timeout", type=float, default=0.0, help="seconds to wait for replies (0 = all)")
    p.add_argument("--min-nodes", type=int, default=0, help="SuperNodes to wait for (0 = one per client)")
    p.set_defaults(func=_cmd_flower_app)

    p = sub.add_parser("config-schema", help="print the JSON schema of run configs")
    p.set_defaults(func=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the provenance of results
    from fedmm.core.console import configure_logging, remove_logging

    handler = configure_logging(1 if args.verbose else -1 if getattr(args, "quiet", False) else 0)
    try:
        return int(args.func(args))
    except FedmmError as exc:
        print(f"fedmm: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))  # RunFailedError: 3, bad input: 2
    except KeyboardInterrupt as exc:
        from fedmm.core.runner import RunInterrupted

        if isinstance(exc, RunInterrupted):
            print(_interrupted_run(args, exc), file=sys.stderr)
        elif args.command == "bench":
            print(
                "fedmm: interrupted (a benchmark run with -o FILE continues with --resume)", file=sys.stderr
            )
        else:
            print("fedmm: interrupted", file=sys.stderr)
        return 130
    finally:
        remove_logging(handler)


if __name__ == "__main__":
    sys.exit(main())
