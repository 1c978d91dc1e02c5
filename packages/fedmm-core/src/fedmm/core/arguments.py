"""Checks of constructor arguments that raise one :class:`~fedmm.core.errors.ArgumentError` naming
the argument, so a technique refuses a bad value when it is built, never in round 1.

Values come from TOML configs as well as from Python, so the checks accept what both give
(numpy integers for ints, ints for floats) and refuse what neither means (``True`` as a count,
``"high"`` as a number, ``nan``). Each returns the value normalised (``int``, ``float``, ...)::

    self.gamma = integer("fedmfs", "gamma", gamma, low=1)
    self.temperature = number("fedmvp", "temperature", temperature, low=0, low_open=True)
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from fedmm.core.errors import ArgumentError

__all__ = [
    "choice",
    "did_you_mean",
    "flag",
    "integer",
    "known_keys",
    "number",
    "optional_integer",
    "optional_number",
    "optional_text",
]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'gamma'?)"`` when ``name`` looks like a misspelling of a known name, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def integer(owner: str, name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within ``[low, high]`` (a whole number: not a bool, float or string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(
            owner, name, f"must be an integer{_range(low, high, False, False)}, got {value!r}"
        )
    whole = int(value)
    if (low is not None and whole < low) or (high is not None and whole > high):
        raise ArgumentError(
            owner, name, f"must be an integer{_range(low, high, False, False)}, got {value!r}"
        )
    return whole


def optional_integer(
    owner: str, name: str, value: Any, *, low: int | None = None, high: int | None = None
) -> int | None:
    """``None``, or an ``int`` as :func:`integer` checks it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(
            owner, name, f"must be an integer{_range(low, high, False, False)} or omitted, got {value!r}"
        )
    return integer(owner, name, value, low=low, high=high)


def number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a finite ``float`` within the range (``inf`` only where ``allow_inf``)."""
    bounds = _range(low, high, low_open, high_open)
    kind = "a number" if allow_inf else "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(owner, name, f"must be {kind}{bounds}, got {value!r}")
    x = float(value)
    bad = math.isnan(x) or (math.isinf(x) and not allow_inf)
    if low is not None and (x < low or (low_open and x == low)):
        bad = True
    if high is not None and (x > high or (high_open and x == high)):
        bad = True
    if bad:
        raise ArgumentError(owner, name, f"must be {kind}{bounds}, got {value!r}")
    return x


def optional_number(owner: str, name: str, value: Any, **bounds: Any) -> float | None:
    """``None``, or a ``float`` as :func:`number` checks it."""
    if value is None:
        return None
    return number(owner, name, value, **bounds)


def flag(owner: str, name: str, value: Any) -> bool:
    """``value`` as a ``bool``: only ``True`` or ``False`` (``1`` or ``"no"`` are refused, not guessed)."""
    if not isinstance(value, bool):
        raise ArgumentError(owner, name, f"must be true or false, got {value!r}")
    return value


def choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices`` (the message lists them)."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ArgumentError(owner, name, f"must be one of {listed}, got {value!r}{hint}")
    return value


def optional_text(owner: str, name: str, value: Any, what: str = "a string") -> str | None:
    """``None`` or a non-empty string (a path, a name, ...)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ArgumentError(owner, name, f"must be {what} or omitted, got {value!r}")
    return value


def known_keys(owner: str, name: str, value: Any, known: Collection[str]) -> dict[str, Any]:
    """``value`` as a ``dict`` whose keys are all in ``known`` (an options table)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentError(owner, name, f"must be a table of options, got {value!r}")
    for key in value:
        if key not in known:
            hint = did_you_mean(str(key), known)
            raise ArgumentError(
                owner,
                name,
                f"has an unknown option {key!r}{hint}; its options are {', '.join(sorted(known))}",
            )
    return dict(value)
