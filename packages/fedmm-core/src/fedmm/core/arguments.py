"""Checks of constructor arguments that raise one :class:`~fedmm.core.errors.ArgumentError` naming
the argument, so a technique refuses a bad value when it is built, never in round 1.

Values come from TOML configs as well as from Python, so the checks accept what both give
(numpy integers for ints, ints for floats) and refuse what neither means (``True`` as a count,
``"high"`` as a number, ``nan``).

A technique declares its arguments once, as a :class:`TechniqueArguments` model: each field's type,
default, bounds and description. That one declaration validates the constructor's arguments, gives
``Technique.config()``, the technique's part of the run config's JSON schema (``fedmm
config-schema``) and its argument table in the docs (:func:`argument_table`)::

    class FedMFSArguments(TechniqueArguments):
        gamma: int = Field(1, ge=1, description="modality models a client uploads per round")

Other arguments (an encoder's options, a loader's) use the single checks, each of which returns the
value normalised (``int``, ``float``, ...)::

    self.temperature = number("fedmvp", "temperature", temperature, low=0, low_open=True)
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import numbers
import operator
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from fedmm.core.errors import ArgumentError

__all__ = [
    "ArgumentProblem",
    "TechniqueArguments",
    "argument_table",
    "choice",
    "describe",
    "did_you_mean",
    "flag",
    "integer",
    "known_keys",
    "number",
    "optional_integer",
    "optional_number",
    "optional_text",
    "python_only",
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


# -- a technique's arguments, declared once ------------------------------------------------------


class ArgumentProblem(ValueError):
    """Raised by a validator of a :class:`TechniqueArguments` model to refuse ``argument`` (a field,
    or a part of one: ``"layers_per_stage.image"``); the technique's name is added when it is
    reported as an :class:`~fedmm.core.errors.ArgumentError`."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(problem)
        self.argument = argument
        self.problem = problem


def python_only(description: str) -> Any:
    """A field only Python callers can give (an object: a completer, a sample set). It stays out of
    ``config()`` and the config schema; annotate it ``SkipJsonSchema[...]``."""
    return Field(None, exclude=True, description=description)


def _plain(value: Any) -> Any:
    """What TOML and Python give, in the types the (strict) fields take: numpy scalars as ``int`` /
    ``float``, lists as tuples (arguments are immutable), mappings as dicts."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class TechniqueArguments(BaseModel):
    """A technique's arguments: one field each, with its type, default, bounds and description.

    Fields are strict, so that nothing is guessed: ``True`` is no count, ``"3"`` no integer,
    ``"no"`` no flag; ``nan`` and ``inf`` are refused unless a field allows them
    (``Field(allow_inf_nan=True)``). Numpy scalars and lists are taken (lists as tuples). A field
    that only Python can give is declared with :func:`python_only`. Checks that a type cannot say
    are validators that raise :class:`ArgumentProblem` naming the argument (or ``ValueError``, for
    the field they validate).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        arbitrary_types_allowed=True,
        ser_json_inf_nan="constants",  # config() keeps an inf (BMSFed's chi) as inf
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        return {k: _plain(v) for k, v in data.items()} if isinstance(data, Mapping) else data

    @classmethod
    def parse(
        cls, owner: str, label: str, positional: Sequence[Any] = (), keywords: Mapping[str, Any] | None = None
    ) -> Self:
        """The arguments of a call ``label(*positional, **keywords)`` (positional ones in field
        order), validated; the first bad one is raised as an :class:`ArgumentError` of ``owner``."""
        names = list(cls.model_fields)
        if len(positional) > len(names):
            raise TypeError(f"{label}() takes {len(names)} positional arguments, {len(positional)} given")
        values = dict(zip(names, positional, strict=False))
        for key, value in (keywords or {}).items():
            if key in values:
                raise TypeError(f"{label}() got multiple values for argument {key!r}")
            values[key] = value
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _argument_error(cls, exc, owner, label, values) from None

    @classmethod
    def signature(cls) -> inspect.Signature:
        """The constructor's signature: one keyword (or positional) parameter per field, in order."""
        params = [
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty
                if field.is_required()
                else field.get_default(call_default_factory=True),
                annotation=_bare(field.annotation),
            )
            for name, field in cls.model_fields.items()
        ]
        return inspect.Signature(params)

    def config(self) -> dict[str, Any]:
        """The arguments a config can hold, JSON-able (no :func:`python_only` field)."""
        return self.model_dump(mode="json")


def _bare(annotation: Any) -> Any:
    """``annotation`` without its ``Annotated`` bounds (``int | tuple[int, ...]``), for signatures."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _bare(args[0])
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, [_bare(a) for a in args])
    if origin in (tuple, dict):
        return types.GenericAlias(origin, tuple(a if a is Ellipsis else _bare(a) for a in args))
    return annotation


_TYPE_ERRORS = ("_type", "_parsing", "_from_float", "missing")


def _argument_error(
    model: type[TechniqueArguments], exc: ValidationError, owner: str, label: str, given: Mapping[str, Any]
) -> ArgumentError:
    err = exc.errors()[0]
    loc = err["loc"]
    name = str(loc[0]) if loc else ""
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, ArgumentProblem | ArgumentError):
        return ArgumentError(owner, error.argument, error.problem)
    if err["type"] == "extra_forbidden":
        known = list(model.model_fields)
        return ArgumentError(
            owner,
            name,
            f"unknown argument{did_you_mean(name, known)}; the arguments of {label} are "
            f"{', '.join(known) or 'none'}",
        )
    field = model.model_fields.get(name)
    if isinstance(error, ValueError) or field is None:
        return ArgumentError(owner, name, str(error) if error is not None else err["msg"])
    value = given.get(name)
    if err["type"] == "literal_error":
        hint = did_you_mean(value, _choices(field.annotation)) if isinstance(value, str) else ""
        return ArgumentError(owner, name, f"must be {describe(field)}, got {value!r}{hint}")
    wrong_type = err["type"].endswith(_TYPE_ERRORS)
    return ArgumentError(owner, name, f"must be {describe(field, omitted=wrong_type)}, got {value!r}")


def _choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return [c for a in get_args(annotation) for c in _choices(a)]


def _constraints(metadata: Iterable[Any]) -> list[Any]:
    """Bounds and flags of a field or an ``Annotated`` type, flattened (``Field(ge=1)``: ``Ge(1)``)."""
    out: list[Any] = []
    for m in metadata:
        out.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    return out


def _bounds(constraints: list[Any]) -> str:
    low = high = None
    low_open = high_open = False
    for m in constraints:
        if isinstance(m, annotated_types.Ge):
            low = float(m.ge)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Gt):
            low, low_open = float(m.gt), True  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Le):
            high = float(m.le)  # type: ignore[arg-type]
        elif isinstance(m, annotated_types.Lt):
            high, high_open = float(m.lt), True  # type: ignore[arg-type]
    return _range(low, high, low_open, high_open)


_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}


def _kind(annotation: Any, constraints: list[Any], plural: bool = False) -> str:
    """``annotation`` in words, with its ``constraints`` (bounds, ``allow_inf_nan``, a minimum length)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _kind(args[0], constraints + _constraints(args[1:]), plural)
    if origin in (Union, types.UnionType):
        return " or ".join(_kind(a, constraints, plural) for a in args if a is not type(None))
    if annotation is bool:
        return "flags" if plural else "true or false"
    if annotation in _NOUNS:
        one, many = _NOUNS[annotation]
        text = many if plural else one
        if annotation is float and not any(getattr(m, "allow_inf_nan", False) for m in constraints):
            text = "finite numbers" if plural else "a finite number"
        if annotation is str and any(
            isinstance(m, annotated_types.MinLen) and m.min_length for m in constraints
        ):
            text = "non-empty strings" if plural else "a non-empty string"
        return text + _bounds(constraints)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list of " + _kind(args[0], [], plural=True)
        return f"a list of {len(args)} " + _kind(args[0], [], plural=True)
    if origin is dict:
        item = args[1] if len(args) == 2 else Any
        return "a table" + ("" if item is Any else " of " + _kind(item, [], plural=True))
    if isinstance(annotation, type) and annotation.__module__ != "builtins":
        return f"{'' if plural else 'a '}{annotation.__name__}"
    return "values" if plural else "a value"


def describe(field: FieldInfo, *, omitted: bool = False) -> str:
    """What a field takes, in words (``"an integer >= 1"``, ``"one of 'tree', 'exact'"``); with
    ``omitted``, ``" or omitted"`` where ``None`` (leaving it out) is allowed too."""
    text = _kind(field.annotation, _constraints([field]))
    optional = type(None) in get_args(field.annotation)
    return text + (" or omitted" if omitted and optional else "")


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, float) and math.isinf(value):
        return "`inf`" if value > 0 else "`-inf`"
    return f"`{json.dumps(_jsonable(value))}`"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def argument_table(model: type[TechniqueArguments]) -> str:
    """The Markdown table of a technique's arguments (argument, what it takes, default, meaning),
    for its docs page and its package README; a technique without arguments says so."""
    if not model.model_fields:
        return "It takes no arguments.\n"
    lines = ["| argument | takes | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        takes = "a Python object (not from a config)" if field.exclude else describe(field, omitted=True)
        meaning = " ".join((field.description or "").split())
        cells = [f"`{name}`", takes, _default(field), meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
