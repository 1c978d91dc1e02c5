"""Every package README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = sorted(ROOT.glob("packages/*/README.md"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("readme", READMES, ids=[p.parent.name for p in READMES])
def test_readme_example_runs(readme: Path) -> None:
    blocks = _python_blocks(readme.read_text())
    assert blocks, f"{readme} has no runnable Python example"
    for code in blocks:
        exec(compile(code, str(readme), "exec"), {"__name__": "__readme__"})
