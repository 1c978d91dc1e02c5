"""The GPU device check: run on a machine with a CUDA GPU (tests never need one).

    python tools/device_check.py OUT_DIR [--benches a,b,...] [--skip-tests]

1. The tests that take a device (those skipped without a GPU in ``test_core_devices.py``, and the
   technique matrix's device runs), then the allocation checks that run anywhere, with
   ``FEDMM_DEVICE=cuda``.
2. Each benchmark's quick run on seed 0 with ``FEDMM_DEVICE=cuda`` (every federation a bench builds
   with the default ``device = "auto"`` then trains on the GPU), its JSON written to
   ``OUT_DIR/<bench>.json`` with the GPU's name in its machine record.

``OUT_DIR/device_check.json`` says, for each step, the command, its exit status and seconds, and
the GPU's name. The script exits non-zero when any step failed, and refuses to start without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "packages/fedmm-core/tests/test_core_devices.py",
    "integration_tests/test_matrix.py::test_each_technique_runs_on_the_gpu",
    "integration_tests/test_matrix.py::test_each_technique_allocates_on_its_inputs_device",
]
# Every registered benchmark but core-scale's million clients (its quick run is CPU bookkeeping).
SKIP_BENCHES = {"core-scale"}


def _step(name: str, cmd: list[str], env: dict[str, str], log: Path) -> dict[str, object]:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    print(f"{'ok  ' if rc == 0 else 'FAIL'} {name} ({seconds:.0f} s, log {log.name})", flush=True)
    return {"name": name, "command": " ".join(cmd), "returncode": rc, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="folder for the logs, bench JSON and device_check.json")
    parser.add_argument("--benches", help="comma-separated benchmark names (default: all but core-scale)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("device_check: torch sees no CUDA GPU here; run this on a machine with one", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FEDMM_DEVICE": "cuda", "FEDMM_TEST_DEVICE": "cuda"}
    steps: list[dict[str, object]] = []
    if not args.skip_tests:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
        steps.append(_step("tests", cmd, env, args.out / "tests.log"))
    if args.benches:
        names = [n.strip() for n in args.benches.split(",") if n.strip()]
    else:
        from fedmm.core.cli import benchmarks

        names = sorted(n for n in benchmarks() if n not in SKIP_BENCHES)
    for name in names:
        out = args.out / f"{name}.json"
        cmd = [sys.executable, "-m", "fedmm.core.cli", "bench", name, "--quick", "--seeds", "0", "-q"]
        cmd += ["-o", str(out)]
        steps.append(_step(f"bench {name}", cmd, env, args.out / f"{name}.log"))
    summary = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "steps": steps}
    (args.out / "device_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [s["name"] for s in steps if s["returncode"] != 0]
    print(f"device_check on {gpu}: {len(steps) - len(failed)} of {len(steps)} steps passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
