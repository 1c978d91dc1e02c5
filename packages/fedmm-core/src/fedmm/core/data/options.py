"""The options of each built-in dataset loader, as schemas: checked before anything is loaded.

``[data].options`` of a config (and the keyword options of ``datasets.load``) go to the dataset's
own loader. Each built-in loader's options are declared here — names, types, ranges, defaults
mirroring the loader's keyword arguments (a test keeps the two in step) — so that a misspelt
option, a string where a number belongs or an invalid choice is named before any data is read,
not found deep inside a loader. Values are checked strictly (``2.5`` is not a sample count,
``"true"`` is not a flag) and passed on unchanged. Datasets registered by other packages have no
schema here: their loader checks its own options.

The names the federation sets itself (``clients``, ``seed``, ``alpha``, ...: :data:`RESERVED`) are
never dataset options: in a config they are fields of ``[data]`` (and ``[run].seed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from fedmm.core.arguments import did_you_mean

__all__ = ["OPTIONS", "RESERVED", "option_problems"]

# Arguments of ``registry.federate`` (and ``only_modalities``): set by [data] and [run], not options.
RESERVED: dict[str, str] = {
    "seed": "the run's seed is [run].seed (it seeds the partition and the simulation knobs)",
    "only_modalities": "set [data].modalities instead",
    **{
        name: f"set [data].{name} instead"
        for name in (
            "clients",
            "partition",
            "alpha",
            "unimodal_fraction",
            "missing_rate",
            "incomplete_fraction",
            "missing_label_rate",
            "label_noise_rate",
            "validation_fraction",
            "validation_split",
            "subclients",
            "client_missing_rate",
            "min_samples",
        )
    },
}

Count = Annotated[StrictInt, Field(ge=1)]
Number = StrictFloat | StrictInt  # an int is a fine float; a bool or a string is not
PathLike = StrictStr | Path


def _fraction(low_open: bool = True, high_open: bool = True) -> Any:
    return Field(gt=0, lt=1) if low_open and high_open else Field(ge=0, le=1)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True)


def _modality_table(value: Any) -> Any:
    """``[name, dim]``, ``[name, dim, informativeness]`` or a SyntheticModality, as a table."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list | tuple):
        if len(value) not in (2, 3):
            raise ValueError(
                "a modality is [name, dim], [name, dim, informativeness] or "
                f"{{name = ..., dim = ..., informativeness = ...}}, got {list(value)!r}"
            )
        return dict(zip(("name", "dim", "informativeness"), value, strict=False))
    return value


class SyntheticModalityOption(_Options):
    name: Annotated[StrictStr, Field(min_length=1)]
    dim: Count
    informativeness: Annotated[Number, Field(ge=0, le=1)] = 1.0


class SyntheticOptions(_Options):
    """Options of ``synthetic`` (:func:`fedmm.core.data.synthetic.make_synthetic`)."""

    num_samples: Count = 10_000
    num_classes: Annotated[StrictInt, Field(ge=2)] = 10
    modalities: Annotated[
        list[Annotated[SyntheticModalityOption, BeforeValidator(_modality_table)]], Field(min_length=1)
    ] = Field(
        default_factory=lambda: [
            SyntheticModalityOption(name="a", dim=8, informativeness=1.0),
            SyntheticModalityOption(name="b", dim=8, informativeness=0.5),
        ]
    )
    noise: Annotated[Number, Field(ge=0)] = 1.0
    separation: Number = 3.0
    test_samples: Count | None = None
    seed: Annotated[StrictInt, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _distinct_names(self) -> SyntheticOptions:
        names = [m.name for m in self.modalities]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"modality names must be distinct; {', '.join(map(repr, twice))} repeats")
        return self


class UciHarOptions(_Options):
    """Options of ``uci-har`` (:func:`fedmm.core.data.uci_har.load_central`)."""

    path: PathLike
    acc_source: Literal["total", "body"] = "total"
    standardize: StrictBool = True
    window_norm: StrictBool = False


class PtbXlOptions(_Options):
    """Options of ``ptb-xl`` (:func:`fedmm.core.data.ptbxl.load_central`)."""

    path: PathLike
    sampling_rate: Literal[100, 500] = 100
    test_fold: Annotated[StrictInt, Field(ge=1, le=10)] = 10
    min_site_records: Count = 10
    min_likelihood: Annotated[Number, Field(ge=0, le=100)] = 100.0
    window_norm: StrictBool = True
    progress: StrictBool = True


class KuHarOptions(_Options):
    """Options of ``ku-har`` (:func:`fedmm.core.data.ku_har.load_central`)."""

    path: PathLike
    classes: Literal["fedmultimodal", "all"] = "fedmultimodal"
    window: Annotated[StrictInt, Field(ge=2)] = 128
    stride: Count | None = None
    downsample: Count = 2
    test_fold: Annotated[StrictInt, Field(ge=0, le=4)] = 0
    exclude_subjects: tuple[StrictInt, ...] = (1101,)
    window_norm: StrictBool = True
    progress: StrictBool = True


class _HaptWindows(_Options):
    """The options ``hapt`` and ``hapt-views`` share."""

    window: Annotated[StrictInt, Field(ge=2)] = 128
    stride: Count = 64
    test_subjects: Annotated[tuple[StrictInt, ...], Field(min_length=1)] = (
        2, 4, 9, 10, 12, 13, 18, 20, 24
    )  # fmt: skip
    standardize: StrictBool = True
    cache: PathLike | None = None
    progress: StrictBool = True
    rebuild: StrictBool = False


class HaptOptions(_HaptWindows):
    """Options of ``hapt`` (:func:`fedmm.core.data.hapt.load_central`)."""

    acc_source: Literal["total", "body"] = "total"
    window_norm: StrictBool = False


class HaptViewsOptions(_HaptWindows):
    """Options of ``hapt-views`` (:func:`fedmm.core.data.hapt_views.load_central`): hapt's windows."""


class AvDigitsOptions(_Options):
    """Options of ``av-digits`` (:func:`fedmm.core.data.av_digits.load_central`)."""

    seed: Annotated[StrictInt, Field(ge=0)] = 0
    test_fraction: Annotated[Number, _fraction()] = 0.2
    image_noise: Annotated[Number, Field(ge=0)] = 0.15
    occlusion: Annotated[StrictInt, Field(ge=0, le=8)] = 2
    audio_snr_db: Number = -8.0
    n_mels: Count = 32
    frames: Count = 80
    voices: Annotated[tuple[StrictStr, ...], Field(min_length=1)] = (
        "en+m1", "en-us+f2", "en-gb-scotland+m3", "en-gb-x-rp+f4",
        "en-029+m7", "en-us-nyc+f1", "en-gb-x-gbclan+m2", "en-gb-x-gbcwmd+f3",
    )  # fmt: skip
    speeds: Annotated[tuple[Count, ...], Field(min_length=1)] = (120, 150, 180)
    pitches: Annotated[tuple[Annotated[StrictInt, Field(ge=0, le=99)], ...], Field(min_length=1)] = (
        30,
        50,
        70,
    )
    cache: PathLike | None = None
    progress: StrictBool = True
    rebuild: StrictBool = False


class CaptionsOptions(_Options):
    """Options of ``captions`` (:func:`fedmm.core.data.captions.load_central`)."""

    path: PathLike
    layout: Literal["auto", "class_folders", "coco"] = "auto"
    annotations: PathLike | None = None
    images_dir: PathLike | None = None
    labels: Mapping[Any, StrictStr] | None = None
    image_size: Count | tuple[Count, Count] = 32
    max_len: Count = 16
    min_freq: Count = 1
    max_vocab: Count | None = None
    captions_per_image: Count | None = 1
    test_fraction: Annotated[Number, _fraction()] = 0.2
    seed: Annotated[StrictInt, Field(ge=0)] = 0
    progress: StrictBool = True


OPTIONS: dict[str, type[_Options]] = {
    "synthetic": SyntheticOptions,
    "uci-har": UciHarOptions,
    "ptb-xl": PtbXlOptions,
    "ku-har": KuHarOptions,
    "hapt": HaptOptions,
    "hapt-views": HaptViewsOptions,
    "av-digits": AvDigitsOptions,
    "captions": CaptionsOptions,
}


def _place(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def option_problems(dataset: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(option, problem)`` for each thing wrong in ``options`` of ``dataset`` (``[]`` = fine;
    option ``""`` = the table as a whole).

    Names the federation owns (:data:`RESERVED`) are refused for every dataset; the rest are
    checked against the dataset's schema when it is a built-in one.
    """
    problems = [(key, f"not a dataset option: {RESERVED[key]}") for key in options if key in RESERVED]
    schema = OPTIONS.get(dataset)
    if schema is None:
        return problems
    rest = {k: v for k, v in options.items() if k not in RESERVED}
    try:
        schema.model_validate(rest)
    except ValidationError as exc:
        known = sorted(set(schema.model_fields) - set(RESERVED))  # seed is a loader argument, not an option
        for err in exc.errors():
            extra = err["type"] == "extra_forbidden"
            raw_loc = tuple(err["loc"])
            # Pydantic also names the union member or validator that failed; the user wrote neither.
            loc = tuple(
                p
                for i, p in enumerate(raw_loc)
                if isinstance(p, int) or p in _FIELD_NAMES or (extra and i == len(raw_loc) - 1)
            )
            where = _place(loc)
            if extra and len(loc) == 1:
                hint = did_you_mean(str(loc[0]), known)
                problems.append(
                    (where, f"unknown option{hint}; the options of {dataset!r} are {', '.join(known)}")
                )
            elif extra:
                problems.append((where, "unknown field"))
            elif err["type"] == "missing":
                problems.append((where, "required option is missing"))
            else:
                msg = err["msg"].removeprefix("Value error, ")
                got = err.get("input")
                shown = "" if isinstance(got, Mapping) else f" (got {got!r})"
                problems.append((where, f"{msg}{shown}"))
    # One problem per option: a union reports each member's complaint about the same value.
    seen: dict[str, tuple[str, str]] = {}
    for where, problem in problems:
        seen.setdefault(where.split(".")[0].split("[")[0], (where, problem))
    return list(seen.values())


_SCHEMAS: tuple[type[BaseModel], ...] = (*OPTIONS.values(), SyntheticModalityOption)
_FIELD_NAMES = frozenset(name for schema in _SCHEMAS for name in schema.model_fields)
