"""Parameter-group names: build, parse and match them here, never by splitting strings elsewhere.

A model's parameters fall into named groups (:func:`fedmm.core.arrays.model_groups`), the unit
that plans train, download and upload:

- ``encoder.<modality>``: a modality's encoder (``encoder.audio``);
- ``encoder.<modality>.<part>``: one part of a layered encoder (``encoder.text.3``, a block of
  layers that layer-wise training grows and freezes separately);
- anything else: shared parts (``fusion``, ``head``, a technique's own groups).

A *pattern* (the ``TrainPlan`` group fields, ``ModelNeeds.groups``) names a group, every group
below it (``encoder.text`` = all its parts) or a shell-style wildcard (``encoder.*``; ``*`` = all).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from fedmm.core.errors import ConfigError

ENCODER = "encoder"


def encoder_group(modality: str, part: str | int | None = None) -> str:
    """The group of ``modality``'s encoder, or of one ``part`` of a layered one."""
    return f"{ENCODER}.{modality}" if part is None else f"{ENCODER}.{modality}.{part}"


def modality_of(group: str) -> str | None:
    """The modality whose encoder ``group`` belongs to (``encoder.text.3`` → ``text``); None for a
    group that is no encoder's (``fusion``, ``head``)."""
    top, _, rest = group.partition(".")
    if top != ENCODER or not rest:
        return None
    return rest.partition(".")[0]


def part_of(group: str) -> str | None:
    """The part of a layered encoder's group (``encoder.text.3`` → ``"3"``); None otherwise."""
    if modality_of(group) is None:
        return None
    rest = group.split(".", 2)
    return rest[2] if len(rest) == 3 else None


def matches(group: str, pattern: str) -> bool:
    """Whether ``pattern`` names ``group``: equal, an ancestor (``encoder.text`` names
    ``encoder.text.0``), or a shell-style wildcard."""
    return group == pattern or group.startswith(pattern + ".") or fnmatch.fnmatchcase(group, pattern)


def of_modality(groups: Iterable[str], modality: str) -> list[str]:
    """The groups of ``modality``'s encoder (its whole group or its parts), in order."""
    return [g for g in groups if modality_of(g) == modality]


def expand_groups(patterns: Iterable[str], groups: Iterable[str]) -> tuple[str, ...]:
    """Resolve group patterns against the model's groups, keeping the model's order.

    Raises :class:`~fedmm.core.errors.ConfigError` for a pattern that matches nothing (a plan
    naming a group the model lacks is a mistake, not a no-op)."""
    groups = list(groups)
    chosen: set[str] = set()
    for pattern in patterns:
        hit = [g for g in groups if matches(g, pattern)]
        if not hit:
            raise ConfigError(f"parameter group {pattern!r} matches nothing; the model's groups are {groups}")
        chosen.update(hit)
    return tuple(g for g in groups if g in chosen)


def expand_modalities(patterns: Iterable[str], modalities: Iterable[str]) -> list[str]:
    """Patterns with ``{m}`` written out once per modality (``"encoder.{m}"`` → one per modality)."""
    mods = list(modalities)
    out: list[str] = []
    for p in patterns:
        if "{m}" in p:
            out.extend(p.format(m=m) for m in mods)
        else:
            out.append(p)
    return out


__all__ = [
    "ENCODER",
    "encoder_group",
    "expand_groups",
    "expand_modalities",
    "matches",
    "modality_of",
    "of_modality",
    "part_of",
]
