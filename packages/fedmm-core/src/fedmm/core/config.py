"""Run configuration (TOML), validated: every bad field gets one message naming it.

A config has the sections ``[run]``, ``[data]``, ``[model]``, ``[strategy]`` and a list
``[[techniques]]`` (each ``name = "..."`` plus that technique's own arguments). Techniques are
found through the ``fedmm.techniques`` entry-point group; naming one whose package is not
installed says which package to install when a registered catalog knows it (``fedmm.core.catalog``).

Overrides (``fedmm run --set strategy.lr=0.1``, ``load_config(path, ["strategy.lr=0.1"])``) are
dotted paths into the same schema: ``data.options.num_samples=500``, ``techniques.0.gamma=2``
(a technique by index, or by name when one technique has it: ``techniques.fedmfs.gamma=2``).
Values are TOML values (``0.1``, ``true``, ``"x"``, ``[1, 2]``, ``{a = 1}``); anything that does not
parse as one is taken as a plain string. The result is validated like a file.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fedmm.core.arguments import TechniqueArguments, did_you_mean
from fedmm.core.catalog import install_hint
from fedmm.core.data.options import option_problems
from fedmm.core.errors import ArgumentError, ConfigError

# Names accepted by ``[run].trackers`` (see fedmm.core.trackers).
TrackerName = Literal["tensorboard", "mlflow"]


class _Section(BaseModel):
    # inf and nan are valid TOML floats, but no field means them (an lr of inf trains nothing).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Errors whose message already names its place in the file (one or several lines of it).
_LOCATED = "located"


def _located(problems: Sequence[str]) -> PydanticCustomError:
    return PydanticCustomError(_LOCATED, "{problems}", {"problems": "; ".join(problems)})


class RunSection(_Section):
    name: str = "run"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    rounds: int = Field(10, ge=1)
    engine: Literal["inprocess", "flower"] = "inprocess"
    eval_every: int = Field(1, ge=0, description="evaluate on the test set every N rounds (0 = never)")
    output_dir: str = Field("runs", description="run folders are created under this directory")
    checkpoint_every: int = Field(
        0, ge=0, description="write a checkpoint every N rounds (0 = only at the end)"
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description='where the model trains and is evaluated: "auto" (the first CUDA GPU if torch '
        'sees one, else the CPU), "cpu", "cuda" or "cuda:N"',
    )
    batch_clients: bool = Field(
        True,
        description="the in-process engine trains a round's clients together as one vectorised "
        "computation when their plans allow it (the same numbers up to float rounding); false: "
        "one after another",
    )
    threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op threads; 1 is fastest for the small models of FL simulation "
        "(several threads on a busy 2-core machine can be 10x slower); null = torch's choice",
    )
    trackers: list[TrackerName] = Field(
        default_factory=list,
        description="experiment trackers that get every round's metrics (with the round's ledger totals) "
        'and the config: "tensorboard" writes event files to the run folder\'s tensorboard/ (extra '
        'fedmm-core[tensorboard]); "mlflow" logs to MLFLOW_TRACKING_URI, else to the file store ./mlruns '
        "(extra fedmm-core[mlflow])",
    )

    @field_validator("trackers")
    @classmethod
    def _distinct_trackers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a tracker is named twice")
        return value


class DataSection(_Section):
    name: str = Field(..., description="dataset name, see `fedmm datasets list`")
    clients: int | None = Field(10, ge=1)
    partition: Literal["iid", "dirichlet", "natural", "natural_dirichlet"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller = more label skew)")
    subclients: int = Field(
        5,
        ge=1,
        description="with partition = 'natural_dirichlet': sub-clients per natural group, cut by a "
        "Dirichlet(alpha) over labels (FedMultimodal's UCI-HAR split: 21 subjects x 5)",
    )
    client_missing_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability that a client lacks a modality for all its samples (FedMultimodal's "
        "missing modality); a client left with none is dropped",
    )
    unimodal_fraction: float = Field(0.0, ge=0, le=1, description="fraction of clients keeping one modality")
    missing_rate: float = Field(0.0, ge=0, le=1, description="per-sample missing-modality rate")
    incomplete_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of training samples that lose exactly one of their modalities (a fixed "
        "share of incomplete samples, unlike missing_rate's independent drops; the 'missing ratio' "
        "of missing-modality papers such as FedMVP)",
    )
    missing_label_rate: float = Field(0.0, ge=0, le=1)
    label_noise_rate: float = Field(0.0, ge=0, le=1)
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="training pool share held by the server")
    validation_split: Literal["pooled", "per_group"] = Field(
        "pooled", description="hold validation_fraction out of the whole pool or of each natural group"
    )
    min_samples: int = Field(1, ge=0)
    modalities: list[str] | None = Field(
        None, description="use only these modalities (e.g. a unimodal baseline)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the dataset loader's own options")

    @field_validator("options")
    @classmethod
    def _options_fit_the_loader(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # A built-in loader's options are checked by its schema now, not found wrong inside it.
        name = info.data.get("name")
        problems = option_problems(name if isinstance(name, str) else "", options)
        if problems:
            raise _located(
                [f"[data].options{'.' if where else ''}{where}: {problem}" for where, problem in problems]
            )
        return options


class ModelSection(_Section):
    fusion: Literal["concat", "attention"] = "concat"
    embed_dim: int = Field(64, ge=1)
    hidden: int = Field(64, ge=1)
    encoders: dict[str, Literal["auto", "mlp", "cnn", "conv1d", "lstm", "transformer"]] = Field(
        default_factory=dict
    )
    encoder_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _encoder_options_fit(self) -> ModelSection:
        # What is known before the data is: option names and values, and heads | embed_dim for a
        # declared transformer. An "auto" encoder's kind is checked again once the data is loaded.
        from fedmm.core.models.encoders import check_encoder_options

        problems = []
        for modality, options in self.encoder_options.items():
            try:
                check_encoder_options(modality, self.encoders.get(modality, "auto"), self.embed_dim, options)
            except ArgumentError as exc:
                problems.append(f"[model].encoder_options.{modality}.{exc.argument}: {exc.problem}")
        if problems:
            raise _located(problems)
        return self


class StrategySection(_Section):
    # "fedavg", or FedAvg with a server optimizer stepping the global model from the aggregate.
    name: Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    server_lr: float | None = Field(None, gt=0, description="server learning rate η (server optimizers)")
    server_momentum: float | None = Field(None, ge=0, lt=1, description="β of FedAvgM's server momentum")
    beta1: float | None = Field(None, ge=0, lt=1, description="FedOpt's first-moment decay β1")
    beta2: float | None = Field(None, ge=0, lt=1, description="FedAdam/FedYogi's second-moment decay β2")
    tau: float | None = Field(None, gt=0, description="FedOpt's adaptivity τ")
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(None, gt=0, description="clip each step's gradients to this L2 norm")

    @model_validator(mode="after")
    def _one_sampling_rule(self) -> StrategySection:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("give clients_per_round or fraction, not both")
        allowed = {
            "fedavg": set(),
            "fedavgm": {"server_lr", "server_momentum"},
            "fedadam": {"server_lr", "beta1", "beta2", "tau"},
            "fedyogi": {"server_lr", "beta1", "beta2", "tau"},
            "fedadagrad": {"server_lr", "beta1", "tau"},
        }[self.name]
        given = [
            k
            for k in ("server_lr", "server_momentum", "beta1", "beta2", "tau")
            if getattr(self, k) is not None
        ]
        stray = [k for k in given if k not in allowed]
        if stray:
            takes = ", ".join(sorted(allowed)) if allowed else "none of them (it has no server optimizer)"
            raise ValueError(
                f"{', '.join(stray)} do(es) not apply to name = {self.name!r}, which takes {takes}; "
                "choose a server optimizer with name = 'fedavgm', 'fedadam', 'fedyogi' or 'fedadagrad'"
            )
        return self

    def server_optimizer_options(self) -> dict[str, float]:
        """The given server-optimizer options under the optimizer's argument names."""
        names = {"server_momentum": "momentum"}
        return {
            names.get(k, k): float(v)
            for k in ("server_lr", "server_momentum", "beta1", "beta2", "tau")
            if (v := getattr(self, k)) is not None
        }


class FlowerSection(_Section):
    """Options of ``engine = "flower"`` (Flower's simulation engine)."""

    client_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per ClientApp")
    num_cpus: int | None = Field(None, ge=1, description="CPUs Ray may use (null = all)")
    round_timeout: float | None = Field(
        None, gt=0, description="seconds to wait for a round's replies (null = until all arrive)"
    )


class TechniqueSection(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RunConfig(_Section):
    run: RunSection = Field(default_factory=RunSection)  # type: ignore[arg-type]
    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)  # type: ignore[arg-type]
    strategy: StrategySection = Field(default_factory=StrategySection)  # type: ignore[arg-type]
    techniques: list[TechniqueSection] = Field(default_factory=list)
    flower: FlowerSection = Field(default_factory=FlowerSection)  # type: ignore[arg-type]


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return "config"
    if parts[0] == "techniques" and len(parts) > 1:
        head = f"[[techniques]] #{int(parts[1]) + 1}"
        return head + ("." + ".".join(parts[2:]) if len(parts) > 2 else "")
    return f"[{parts[0]}]" + ("." + ".".join(parts[1:]) if len(parts) > 1 else "")


def _problem(err: Any) -> str:
    if err["type"] == _LOCATED:
        return str(err["msg"])
    got = err.get("input")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check its spelling, or see the configuration reference)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
    return f"{_where(tuple(err['loc']))}: {msg}{shown}"


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s)):"]
    lines.extend(f"  - {_problem(err)}" for err in exc.errors())
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and validate a TOML run config, then apply ``overrides`` (``"strategy.lr=0.1"``, ...)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file; pass the .toml file in it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} on line {line}); TOML files are UTF-8: "
            "save it with that encoding"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if isinstance(overrides, str):
        overrides = [overrides]
    # Overrides go into the file's tables before validation: they may complete a partial file.
    locs = [(item, _apply(raw, item)) for item in overrides]
    return _validate(raw, str(path), locs)


# -- overrides (--set) --------------------------------------------------------------------------


class _ListOf:
    """Schema of a list of tables addressed by index (``techniques``)."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model


_FREE = "free"  # a table whose keys are not in the schema (data.options, a technique's arguments)
_VALUE = "value"  # a single value: nothing below it can be addressed
_Schema = type[BaseModel] | _ListOf | str


def _schema_of(annotation: Any) -> _Schema:
    if get_origin(annotation) in (Union, UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return _ListOf(args[0])
    if origin is dict or annotation is Any:
        return _FREE
    return _VALUE


def parse_value(text: str) -> Any:
    """A TOML value (``0.1``, ``true``, ``"x"``, ``[1, 2]``), else ``text`` as a plain string."""
    text = text.strip()
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # "1\nx = 2" parses as two keys: that is not one value.
    return doc["v"] if set(doc) == {"v"} else text


def _list_index(items: list[Any], part: str, here: str, item: str) -> int:
    if part.isdigit():
        index = int(part)
        if index < len(items):
            return index
    else:
        named = [i for i, t in enumerate(items) if isinstance(t, dict) and t.get("name") == part]
        if len(named) == 1:
            return named[0]
    names = ", ".join(str(t.get("name")) for t in items if isinstance(t, dict)) or "none"
    raise ConfigError(
        f"--set {item}: no [[{here}]] table {part!r}; the config has {len(items)} "
        f"(by index 0-{len(items) - 1} or by name: {names})"
        if items
        else f"--set {item}: the config has no [[{here}]] table to change"
    )


def _apply(raw: dict[str, Any], item: str) -> tuple[int | str, ...]:
    """Set one ``FIELD=VALUE`` into ``raw``; the path as a validation-error location."""
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set strategy.lr=0.1")
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise ConfigError(f"--set {item!r}: {key!r} has an empty name between dots; e.g. data.alpha=0.1")
    value = parse_value(text)
    node: Any = raw
    schema: _Schema = RunConfig
    loc: list[int | str] = []
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        last = i == len(parts) - 1
        if isinstance(schema, _ListOf):
            index = _list_index(node, part, here, item)
            loc.append(index)
            if last:
                node[index] = value
                break
            node, schema = node[index], schema.model
            continue
        if schema == _VALUE or not isinstance(node, dict):
            raise ConfigError(
                f"--set {item}: {here} is a single value, not a table; write --set {here}=VALUE"
            )
        if isinstance(schema, type):
            fields = schema.model_fields
            if part in fields:
                child: _Schema = _schema_of(fields[part].annotation)
            elif schema.model_config.get("extra") == "allow":
                child = _FREE
            elif schema is RunConfig:
                raise ConfigError(
                    f"--set {item}: unknown section {part!r}; valid sections: {', '.join(sorted(fields))}"
                )
            else:
                raise ConfigError(
                    f"--set {item}: [{here}] has no field {part!r}; valid fields: {', '.join(sorted(fields))}"
                )
        else:
            child = _FREE
        loc.append(part)
        if last:
            node[part] = value
            break
        if node.get(part) is None:
            node[part] = [] if isinstance(child, _ListOf) else {}
        node, schema = node[part], child
    return tuple(loc)


def _validate(raw: dict[str, Any], source: str, locs: list[tuple[str, tuple[int | str, ...]]]) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems, from_set = [], False
        for err in exc.errors():
            loc = tuple(err["loc"])
            # The override whose path leads to (or lies under) the bad field, else the file.
            item = next(
                (item for item, at in reversed(locs) if loc[: len(at)] == at or at[: len(loc)] == loc),
                None,
            )
            from_set = from_set or item is not None
            problems.append(f"{f'--set {item}' if item is not None else source}: {_problem(err)}")
        if not from_set:
            raise ConfigError(format_validation_error(exc, source)) from None
        raise ConfigError("; ".join(problems)) from None


def override_config(cfg: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """``cfg`` with ``FIELD=VALUE`` overrides applied (see the module docstring), validated."""
    if isinstance(overrides, str):
        overrides = [overrides]
    if not overrides:
        return cfg
    raw = cfg.model_dump()
    return _validate(raw, "config", [(item, _apply(raw, item)) for item in overrides])


def technique_classes() -> dict[str, Any]:
    """Installed techniques: name → entry point."""
    return {ep.name: ep for ep in entry_points(group="fedmm.techniques")}


def _takes_progress(cls: Any) -> bool:
    try:
        return "progress" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def build_technique(section: TechniqueSection, index: int = 0, *, progress: bool = True) -> Any:
    """The technique a ``[[techniques]]`` table names; ``progress=False`` (``-q``) turns off the
    bars of a technique that has a ``progress`` option."""
    found = technique_classes()
    if section.name not in found:
        # Which package provides it: the registered catalogs know (fedmm.core.catalog), not core.
        hint = install_hint(section.name, found)
        raise ConfigError(f"[[techniques]] #{index + 1}: technique {section.name!r} is not installed; {hint}")
    try:
        cls = found[section.name].load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"[[techniques]] #{index + 1}: technique {section.name!r} is registered but failed to import "
            f"({exc}); reinstall its package"
        ) from None
    where = f"[[techniques]] #{index + 1} ({section.name})"
    arguments = section.arguments()
    _check_argument_names(cls, arguments, where)
    if not progress and _takes_progress(cls):
        arguments["progress"] = False
    try:
        return cls(**arguments)
    except ArgumentError as exc:
        raise ConfigError(f"{where}.{exc.argument}: {exc.problem}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        # A technique that does not check its own arguments: name at least the table.
        raise ConfigError(f"{where}: {exc}") from None


def _check_argument_names(cls: Any, arguments: dict[str, Any], where: str) -> None:
    """Unknown (misspelt) and missing arguments, named before the constructor runs."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to check against: the constructor decides
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for name in arguments:
        if name not in named:
            listed = ", ".join(named) or "none"
            raise ConfigError(
                f"{where}.{name}: unknown argument{did_you_mean(name, named)}; "
                f"the arguments of {cls.__name__} are {listed}"
            )
    missing = [n for n, p in named.items() if p.default is p.empty and n not in arguments]
    if missing:
        raise ConfigError(f"{where}: missing required argument(s) {', '.join(missing)}")


def technique_arguments() -> dict[str, type[TechniqueArguments]]:
    """Installed techniques whose constructor takes their declared arguments (``Technique.Arguments``):
    name → that model. Techniques that fail to import, or that have a constructor of their own, are
    left out (their tables are checked against the constructor's signature when built)."""
    out: dict[str, type[TechniqueArguments]] = {}
    for name, ep in sorted(technique_classes().items()):
        try:
            cls = ep.load()
        except (ImportError, AttributeError):
            continue
        model = getattr(cls, "Arguments", None)
        if (
            isinstance(model, type)
            and issubclass(model, TechniqueArguments)
            and getattr(cls, "__signature__", None) is not None
        ):
            out[name] = model
    return out


def json_schema() -> dict[str, Any]:
    """The JSON schema of a run config (for docs and editors). Each ``[[techniques]]`` table is one
    of the installed techniques' argument schemas, chosen by its ``name``."""
    schema = RunConfig.model_json_schema()
    declared = technique_arguments()
    if not declared:
        return schema
    defs = schema.setdefault("$defs", {})
    choices = []
    for name, model in declared.items():
        arguments = model.model_json_schema()
        defs.update(arguments.pop("$defs", {}))
        arguments["title"] = f"technique {name!r}"
        arguments["properties"] = {
            "name": {"const": name, "description": "the technique, as it is registered"},
            **arguments.get("properties", {}),
        }
        arguments["required"] = ["name", *arguments.get("required", [])]
        defs[f"technique_{name}"] = arguments
        choices.append({"$ref": f"#/$defs/technique_{name}"})
    # Any other name: a technique installed without declared arguments (its constructor decides).
    other = defs["TechniqueSection"]
    other["properties"]["name"] = {"type": "string", "not": {"enum": list(declared)}}
    choices.append({"$ref": "#/$defs/TechniqueSection"})
    schema["properties"]["techniques"]["items"] = {"oneOf": choices}
    return schema
