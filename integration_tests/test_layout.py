"""Every technique package has one layout (``docs/architecture.md``):

* one folder per method, ``src/fedmm/<pkg>/<method>/``, holding the technique, its maths and its
  benchmark (``bench.py``);
* baselines that are techniques of their own in ``src/fedmm/<pkg>/baselines/``, one module each,
  named as the technique is registered;
* no modules beside the package's ``__init__.py`` (it re-exports the public names);
* every ``fedmm.techniques`` entry point names a method folder or a baseline module, and every
  ``fedmm.benchmarks`` entry point a method's ``bench.py``.

It reads the members' ``pyproject.toml`` files and parses the modules (nothing is imported or
installed), so it checks the sources in any environment, in well under a second. Core is not a
technique package: its own benchmarks live under ``fedmm/core/bench``.
"""

from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_TECHNIQUE_PACKAGES = {"fedmm-core", "fedmm-suite"}
BASELINES = "baselines"


@cache
def _pyproject(member: str) -> dict[str, object]:
    with (ROOT / "packages" / member / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _entry_points(member: str, group: str) -> dict[str, str]:
    project = _pyproject(member).get("project", {})
    assert isinstance(project, dict)
    return dict(project.get("entry-points", {}).get(group, {}))


TECHNIQUE_MEMBERS = sorted(
    p.name
    for p in (ROOT / "packages").iterdir()
    if (p / "pyproject.toml").is_file() and p.name not in NOT_TECHNIQUE_PACKAGES
)


def _package_dir(member: str) -> Path:
    """``src/fedmm/<pkg>``: the one import package a technique member ships."""
    dirs = [
        d
        for d in (ROOT / "packages" / member / "src" / "fedmm").iterdir()
        if d.is_dir() and d.name != "__pycache__"
    ]
    assert len(dirs) == 1, f"{member} ships {[d.name for d in dirs]} under src/fedmm; one package expected"
    return dirs[0]


def _module_file(member: str, module: str) -> Path:
    """The source file of ``module`` (``fedmm.<pkg>...``) in ``member``."""
    path = ROOT / "packages" / member / "src" / Path(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    assert path.with_suffix(".py").is_file(), f"{member}: module {module} has no source file"
    return path.with_suffix(".py")


def _defines(source: Path, name: str) -> bool:
    """Whether ``name`` is bound at the top level of ``source`` (defined, assigned or imported)."""
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def _split(member: str, value: str) -> tuple[list[str], str]:
    """``"fedmm.select.fedmfs:FedMFS"`` → (``["fedmfs"]``, ``"FedMFS"``): the module's parts below the
    member's package, and the object; the object must be bound in that module."""
    module, _, attr = value.partition(":")
    pkg = _package_dir(member).name
    parts = module.split(".")
    assert parts[:2] == ["fedmm", pkg] and attr, (
        f"{member}: entry point {value!r} is not fedmm.{pkg}.<...>:<name>"
    )
    source = _module_file(member, module)
    assert _defines(source, attr), (
        f"{member}: {attr} is not defined or imported in {source.relative_to(ROOT)}"
    )
    return parts[2:], attr


def test_the_technique_packages_are_found() -> None:
    assert {"fedmm-select", "fedmm-schedule", "fedmm-layerwise", "fedmm-completion"} <= set(TECHNIQUE_MEMBERS)


@pytest.mark.parametrize("member", TECHNIQUE_MEMBERS)
def test_no_modules_beside_the_package_init(member: str) -> None:
    pkg = _package_dir(member)
    flat = sorted(p.name for p in pkg.glob("*.py") if p.name != "__init__.py")
    assert not flat, (
        f"{member}: {flat} sit in {pkg.relative_to(ROOT)}; move each into its method folder "
        f"({pkg.name}/<method>/) or, for a baseline, {pkg.name}/{BASELINES}/"
    )


@pytest.mark.parametrize("member", TECHNIQUE_MEMBERS)
def test_techniques_are_registered_from_a_method_folder_or_a_baseline_module(member: str) -> None:
    techniques = _entry_points(member, "fedmm.techniques")
    assert techniques, f"{member} registers no technique (entry point group fedmm.techniques)"
    for name, value in techniques.items():
        below, _ = _split(member, value)
        assert below, f"{member}: technique {name!r} = {value!r} is not in a method folder"
        if below[0] == BASELINES:
            # One module per baseline, named as the technique: baselines/<name>.py.
            assert below == [BASELINES, name], (
                f"{member}: baseline {name!r} = {value!r}; register it from fedmm.<pkg>.{BASELINES}.{name}"
            )
        else:
            folder = _package_dir(member) / below[0]
            assert (folder / "__init__.py").is_file(), (
                f"{member}: technique {name!r} = {value!r} is not in a method folder (<pkg>/<method>/)"
            )


@pytest.mark.parametrize("member", TECHNIQUE_MEMBERS)
def test_each_method_folder_holds_its_registered_benchmark(member: str) -> None:
    benches = _entry_points(member, "fedmm.benchmarks")
    folders: set[str] = set()
    for name, value in benches.items():
        below, _ = _split(member, value)
        assert len(below) == 2 and below[1] == "bench" and below[0] != BASELINES, (
            f"{member}: benchmark {name!r} = {value!r}; a benchmark lives in its method folder: "
            "fedmm.<pkg>.<method>.bench"
        )
        folders.add(below[0])
    methods = {
        _split(member, value)[0][0]
        for value in _entry_points(member, "fedmm.techniques").values()
        if _split(member, value)[0][0] != BASELINES
    }
    assert methods <= folders, f"{member}: method folders {sorted(methods - folders)} register no benchmark"
