"""Catalogs: which package provides a technique that is not installed.

A technique registers itself (entry-point group ``fedmm.techniques``), so core knows every
technique that is installed and nothing of one that is not. A *catalog* does: a TOML file listing
packages and the techniques each provides, registered by an installed package under the
entry-point group ``fedmm.catalog``. The fedmm-suite distribution ships the catalog of the fedmm
technique packages (its ``catalog.toml``). Core reads every registered catalog and names no
technique itself, so adding a technique package needs no edit in core::

    [packages.my-fedmm-techniques]
    techniques = ["my_technique", "my_baseline"]

The entry point names the file: an object that is its path (a ``str``, an ``os.PathLike`` or an
``importlib.resources`` ``Traversable``), e.g. ``mine = "my_package:CATALOG"`` with
``CATALOG = importlib.resources.files(__name__) / "catalog.toml"``. Keys of a
package's table other than ``techniques`` are ignored (room for later additions). A catalog that
cannot be loaded or parsed only helps a message, so it is skipped with a warning naming the file
and what is wrong; it never stops a run.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from importlib.resources.abc import Traversable
from typing import Any

from fedmm.core.errors import ConfigError

__all__ = ["CATALOG_GROUP", "install_hint", "read_catalog", "technique_catalog"]

CATALOG_GROUP = "fedmm.catalog"

log = logging.getLogger("fedmm")


def read_catalog(path: str | os.PathLike[str] | Traversable) -> dict[str, tuple[str, ...]]:
    """Package → the techniques it provides, as the catalog file ``path`` lists them.

    Raises :class:`~fedmm.core.errors.ConfigError` naming the file and the problem when it is not
    a catalog (unreadable, not TOML, no ``[packages]`` table, a ``techniques`` that is not a list
    of names)."""
    try:
        text = path.read_text(encoding="utf-8") if isinstance(path, Traversable) else _read(path)
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"technique catalog {path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"technique catalog {path}: not valid TOML ({exc})") from None
    packages = raw.get("packages")
    if not isinstance(packages, dict):
        raise ConfigError(
            f"technique catalog {path}: needs a [packages.<name>] table per package, "
            'each with techniques = ["<technique>", ...]'
        )
    out: dict[str, tuple[str, ...]] = {}
    for package, table in packages.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"technique catalog {path}: packages.{package} must be a table "
                f'([packages.{package}] with techniques = ["<technique>", ...]), got {table!r}'
            )
        names = table.get("techniques")
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(
                f"technique catalog {path}: [packages.{package}].techniques must be a list of "
                f'technique names (techniques = ["<technique>", ...]), got {names!r}'
            )
        out[package] = tuple(names)
    return out


def _read(path: str | os.PathLike[str]) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _catalog_file(ep: EntryPoint) -> Any:
    try:
        where = ep.load()
    except Exception as exc:  # a plugin that fails to import only loses its hint
        raise ConfigError(f"technique catalog {ep.name!r} ({ep.value}) failed to load: {exc}") from None
    if not isinstance(where, str | os.PathLike | Traversable):
        raise ConfigError(
            f"technique catalog {ep.name!r} ({ep.value}) is a {type(where).__name__}, not the path of "
            "a catalog file"
        )
    return where


def technique_catalog(catalogs: Iterable[EntryPoint] | None = None) -> dict[str, tuple[str, ...]]:
    """Technique name → the packages that provide it, from every catalog registered under
    ``fedmm.catalog`` (or the entry points ``catalogs``). A catalog that cannot be read is skipped
    with a warning."""
    found: dict[str, list[str]] = {}
    for ep in catalogs if catalogs is not None else entry_points(group=CATALOG_GROUP):
        try:
            packages = read_catalog(_catalog_file(ep))
        except ConfigError as exc:
            log.warning("skipped a technique catalog: %s", exc)
            continue
        for package, names in packages.items():
            for name in names:
                if package not in found.setdefault(name, []):
                    found[name].append(package)
    return {name: tuple(packages) for name, packages in found.items()}


def install_hint(name: str, installed: Iterable[str]) -> str:
    """What to say about a technique ``name`` that is not installed: the package to install when a
    catalog knows it, else the techniques that are installed."""
    packages = technique_catalog().get(name)
    if packages:
        if len(packages) == 1:
            return f"it is provided by the package {packages[0]!r}: pip install {packages[0]}"
        return f"it is provided by the packages {', '.join(map(repr, packages))}: pip install one of them"
    return f"installed techniques: {', '.join(sorted(installed)) or 'none'}"
