"""Each package installs alone with plain pip (core + itself, from the repo paths) into a fresh
venv, imports no sibling, and its README example runs there.

Slow (minutes: a real pip install): the integration tier, ``uv run pytest -m integration``.
On the project machines plain pip would otherwise pick a multi-GB CUDA torch: ``torch==2.13.0``
(a local CPU wheel there) is requested alongside, as the developers' guide says.
"""

from __future__ import annotations

import re
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
TORCH = "torch==2.13.0"


@pytest.mark.integration
@pytest.mark.parametrize("package", PACKAGES)
def test_package_installs_alone_and_its_readme_runs(package: str, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    # Core and this package only (a sibling import would fail there); the suite takes every member.
    wanted = set(PACKAGES) if package == "fedmm-suite" else {"fedmm-core", package}
    targets = [str(ROOT / "packages" / p) for p in sorted(wanted)]
    subprocess.run([py, "-m", "pip", "install", "-q", TORCH, *targets], check=True, timeout=1800)

    installed = subprocess.run(
        [py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    fedmm_dists = sorted(line.split("==")[0] for line in installed.splitlines() if line.startswith("fedmm"))
    assert fedmm_dists == sorted(wanted)

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "packages" / package / "README.md").read_text(), re.S)
    assert blocks
    for i, code in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(code)
        done = subprocess.run([py, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
