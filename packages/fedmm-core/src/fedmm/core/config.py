"""Run configuration (TOML), validated: every bad field gets one message naming it.

A config has the sections ``[run]``, ``[data]``, ``[model]``, ``[strategy]`` and a list
``[[techniques]]`` (each ``name = "..."`` plus that technique's own arguments). Techniques are
found through the ``fedmm.techniques`` entry-point group, so naming one whose package is not
installed says which package to install.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedmm.core.errors import ConfigError

# Where each known technique lives, for the "install this package" message.
TECHNIQUE_PACKAGES = {
    "fedmfs": "fedmm-select",
    "bmsfed": "fedmm-select",
    "flexmod": "fedmm-schedule",
    "entire_update": "fedmm-schedule",
    "partial_update": "fedmm-schedule",
    "layerwise": "fedmm-layerwise",
    "fedmvp": "fedmm-completion",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(_Section):
    name: str = "run"
    seed: int = 0
    rounds: int = Field(10, ge=1)
    engine: Literal["inprocess", "flower"] = "inprocess"
    eval_every: int = Field(1, ge=0, description="evaluate on the test set every N rounds (0 = never)")
    output_dir: str = Field("runs", description="run folders are created under this directory")
    checkpoint_every: int = Field(
        0, ge=0, description="write a checkpoint every N rounds (0 = only at the end)"
    )
    threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op threads; 1 is fastest for the small models of FL simulation "
        "(several threads on a busy 2-core machine can be 10x slower); null = torch's choice",
    )


class DataSection(_Section):
    name: str = Field(..., description="dataset name, see `fedmm datasets list`")
    clients: int | None = Field(10, ge=1)
    partition: Literal["iid", "dirichlet", "natural"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller = more label skew)")
    unimodal_fraction: float = Field(0.0, ge=0, le=1, description="fraction of clients keeping one modality")
    missing_rate: float = Field(0.0, ge=0, le=1, description="per-sample missing-modality rate")
    incomplete_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of samples that lose exactly one modality (FedMVP's missing ratio)",
    )
    missing_label_rate: float = Field(0.0, ge=0, le=1)
    label_noise_rate: float = Field(0.0, ge=0, le=1)
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="training pool share held by the server")
    min_samples: int = Field(1, ge=0)
    modalities: list[str] | None = Field(
        None, description="use only these modalities (e.g. a unimodal baseline)"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the dataset loader's own options")


class ModelSection(_Section):
    fusion: Literal["concat", "attention"] = "concat"
    embed_dim: int = Field(64, ge=1)
    hidden: int = Field(64, ge=1)
    encoders: dict[str, Literal["auto", "mlp", "cnn", "conv1d", "lstm", "transformer"]] = Field(
        default_factory=dict
    )
    encoder_options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class StrategySection(_Section):
    name: Literal["fedavg"] = "fedavg"
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_sampling_rule(self) -> StrategySection:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("give clients_per_round or fraction, not both")
        return self


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


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        got = err.get("input")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling, or see the configuration reference)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  - {_where(tuple(err['loc']))}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path))


def technique_classes() -> dict[str, Any]:
    """Installed techniques: name → entry point."""
    return {ep.name: ep for ep in entry_points(group="fedmm.techniques")}


def build_technique(section: TechniqueSection, index: int = 0) -> Any:
    found = technique_classes()
    if section.name not in found:
        package = TECHNIQUE_PACKAGES.get(section.name)
        hint = (
            f"it is provided by the package {package!r}: pip install {package}"
            if package
            else f"installed techniques: {', '.join(sorted(found)) or 'none'}"
        )
        raise ConfigError(f"[[techniques]] #{index + 1}: technique {section.name!r} is not installed; {hint}")
    try:
        cls = found[section.name].load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"[[techniques]] #{index + 1}: technique {section.name!r} is registered but failed to import "
            f"({exc}); reinstall its package"
        ) from None
    try:
        return cls(**section.arguments())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[[techniques]] #{index + 1} ({section.name}): {exc}") from None


def json_schema() -> dict[str, Any]:
    """The JSON schema of a run config (for docs and editors)."""
    return RunConfig.model_json_schema()
