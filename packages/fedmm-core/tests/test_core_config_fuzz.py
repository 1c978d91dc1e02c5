"""Fuzz: configs generated around the real schema never escape as anything but a FedmmError.

Each example is a raw config (the dict a TOML file parses to) built field by field from the
schema: valid values, boundary values, wrong types, unknown keys, typos of field and option
names, extreme numbers; the dataset options of every built-in loader, the model's encoder
options, and the arguments of every installed technique (derived from its class's signature, which
lists its declared arguments: core tests import no technique package). It goes through validation
(``parse_config``), technique construction (``build_strategy``) and — when every size in it is
small — data and model building (``build_dataset``, ``build_model``) on tiny data: synthetic, or a
six-window UCI-HAR folder written once per module. Any exception that is not a
``fedmm.core.errors.FedmmError`` fails the test, and so does a technique error that does not name
its ``[[techniques]]`` entry and field.

The plain tests below the fuzz pin each cause it found, by name.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedmm.core import config
from fedmm.core.config import RunConfig, build_technique, parse_config, technique_classes
from fedmm.core.data import registry
from fedmm.core.errors import ConfigError, FedmmError
from fedmm.core.runner import build_dataset, build_model, build_strategy

INF, NAN = math.inf, math.nan
# Values of the wrong type, boundaries and extremes, for any field.
ODD: list[Any] = [
    None, True, False, "high", "", "1", [], [1, 2], {}, {"x": 1}, 0, -1, 1.5, -0.5,
    2**63, -(2**63), 10**30, 1e308, -1e308, INF, -INF, NAN, 1e-300,
]  # fmt: skip
SMALL_INT = 100  # data and model are built only when every integer in the config is at most this


def typo(name: str, k: int) -> str:
    """A deterministic misspelling of ``name``: a dropped, doubled or swapped character, or case."""
    i = k % max(1, len(name))
    kind = (k // max(1, len(name))) % 4
    if kind == 0:
        out = name[:i] + name[i + 1 :]
    elif kind == 1:
        out = name[:i] + name[i : i + 1] + name[i:]
    elif kind == 2 and i + 1 < len(name):
        out = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    else:
        out = name.upper()
    return out if out != name else name + "_"


class Gen:
    """Draws one config; ``chaos`` (percent) is how often a field gets an odd value instead."""

    def __init__(self, draw: Callable[..., Any], chaos: int) -> None:
        self.draw = draw
        self.chaos = chaos

    def hit(self, percent: float) -> bool:
        """True with about ``percent`` % chance (a window in the middle of the range: Hypothesis
        draws the ends of an integer range far more often than the rest)."""
        return 1000 <= self.draw(st.integers(0, 2999)) < 1000 + round(10 * percent)

    def value(self, valid: Sequence[Any] | st.SearchStrategy[Any], odd: Sequence[Any] = ()) -> Any:
        """One of ``valid`` (a list or a strategy), or ``chaos`` % of the time one of ``odd`` or ODD.

        One draw decides both which branch and which item (generation dominates the runtime).
        """
        roll = self.draw(st.integers(0, 9999))
        if 1000 <= roll < 1000 + 100 * self.chaos:
            pool = [*odd, *ODD]
            return pool[roll % len(pool)]
        if isinstance(valid, st.SearchStrategy):
            return self.draw(valid)
        return valid[roll % len(valid)]

    def table(self, fields: Mapping[str, Callable[[], Any]], required: Sequence[str] = ()) -> dict[str, Any]:
        """Some of ``fields`` (each drawn by its function), sometimes a misspelt or unknown key."""
        out: dict[str, Any] = {}
        for key, make in fields.items():
            if key in required or self.draw(st.booleans()):
                out[key] = make()
        if out and self.hit(self.chaos / 2):
            key = self.draw(st.sampled_from(sorted(out)))
            out[typo(key, self.draw(st.integers(0, 200)))] = out.pop(key)
        elif self.hit(self.chaos / 2):
            out[self.draw(st.sampled_from(["unknown", "x", "", "Name"]))] = self.draw(st.sampled_from(ODD))
        return out


# -- the sections ----------------------------------------------------------------------------


def run_table(g: Gen) -> dict[str, Any]:
    return g.table(
        {
            "name": lambda: g.value(["fuzz", "a b", "ü"]),
            "seed": lambda: g.value(st.integers(0, 2**32), [-1, 2**64]),
            "rounds": lambda: g.value([1, 2, 10]),
            "eval_every": lambda: g.value([0, 1, 5]),
            "checkpoint_every": lambda: g.value([0, 1]),
            "threads": lambda: g.value([None, 1, 2]),
            "trackers": lambda: g.value([[], ["tensorboard"]], [["tensorboard", "tensorboard"], ["wandb"]]),
            "engine": lambda: g.value(["inprocess", "flower"], ["ray"]),
        }
    )


def reserved(g: Gen) -> dict[str, Any]:
    """Sometimes a name the federation owns (``[run].seed``, ``[data].clients``, ...) as an option."""
    if not g.hit(max(3, g.chaos / 2)):
        return {}
    return {g.draw(st.sampled_from(["seed", "clients", "alpha", "only_modalities"])): g.value([0, 2])}


def synthetic_modality(g: Gen, index: int) -> Any:
    name = g.value(["abc"[index]], ["a", 1])
    dim = g.value(st.integers(1, 6), [0, -3, "8", 2.5])
    informativeness = g.value([0.0, 0.5, 1.0], [1.5, -0.1, NAN])
    form = g.draw(st.integers(0, 3))
    if form == 0:
        return [name, dim]
    if form == 1:
        return {"name": name, "dim": dim, "informativeness": informativeness}
    if form == 2 and g.chaos:
        return g.draw(st.sampled_from([[name], [name, dim, informativeness, 1], {"name": name}, name]))
    return [name, dim, informativeness]


def synthetic_options(g: Gen) -> dict[str, Any]:
    return g.table(
        {
            "num_samples": lambda: g.value(st.integers(8, 60), [1, 0, -5, 2.5, "40"]),
            "num_classes": lambda: g.value(st.integers(2, 5), [1, 0]),
            "modalities": lambda: g.value(
                st.integers(1, 3).map(lambda n: [synthetic_modality(g, i) for i in range(n)]),
                [[], [["a", 2], ["a", 3]]],
            ),
            "noise": lambda: g.value([0.0, 0.5, 1.0], [-1.0]),
            "separation": lambda: g.value([0.0, 1.0, 3.0], [-1.0]),
            "test_samples": lambda: g.value([None, 1, 5, 20], [0, -1]),
        },
        required=("num_samples",),
    ) | reserved(g)


def uci_har_options(g: Gen, root: Path) -> dict[str, Any]:
    return g.table(
        {
            "path": lambda: g.value([str(root)], [str(root / "absent"), str(root / "train")]),
            "acc_source": lambda: g.value(["total", "body"], ["gravity"]),
            "standardize": lambda: g.value([True, False]),
        },
        required=("path",),
    ) | reserved(g)


def hapt_options(g: Gen) -> dict[str, Any]:
    return g.table(
        {
            "window": lambda: g.value([2, 64, 128], [1, 0]),
            "stride": lambda: g.value([1, 64], [0]),
            "test_subjects": lambda: g.value([[9, 24], [1]], [["a"], 9]),
            "standardize": lambda: g.value([True, False]),
            "cache": lambda: g.value(["cache"]),
            "progress": lambda: g.value([True, False]),
            "rebuild": lambda: g.value([False]),
        }
    )


def av_digits_options(g: Gen) -> dict[str, Any]:
    return g.table(
        {
            "test_fraction": lambda: g.value([0.2, 0.5], [0.0, 1.0]),
            "image_noise": lambda: g.value([0.0, 0.15], [-1.0]),
            "occlusion": lambda: g.value([0, 2], [-1, 9]),
            "audio_snr_db": lambda: g.value([-8.0, 10.0]),
            "n_mels": lambda: g.value([8, 32], [0]),
            "frames": lambda: g.value([10, 80], [0]),
            "voices": lambda: g.value([["en"], ["en", "de"]], [[], [1]]),
            "speeds": lambda: g.value([[120, 160]], [[], ["x"]]),
            "pitches": lambda: g.value([[50]], [[]]),
            "cache": lambda: g.value(["cache"]),
            "progress": lambda: g.value([True, False]),
            "rebuild": lambda: g.value([False]),
            "seed": lambda: g.value([0]),
        }
    )


def captions_options(g: Gen) -> dict[str, Any]:
    return g.table(
        {
            "path": lambda: g.value(["/nonexistent/captions"]),
            "layout": lambda: g.value(["auto", "class_folders", "coco"], ["csv"]),
            "annotations": lambda: g.value([None, "ann.json"]),
            "images_dir": lambda: g.value([None, "images"]),
            "labels": lambda: g.value([None, {"1": "bird"}], [{"1": 2}]),
            "image_size": lambda: g.value([32, [32, 24]], [0, [32], [0, 1]]),
            "max_len": lambda: g.value([16], [0]),
            "min_freq": lambda: g.value([1, 2], [0]),
            "max_vocab": lambda: g.value([None, 100], [0]),
            "captions_per_image": lambda: g.value([None, 1, 5], [0]),
            "test_fraction": lambda: g.value([0.2], [1.0]),
            "progress": lambda: g.value([True, False]),
        },
        required=("path",),
    )


# The modality names of the two datasets built here.
NAMES = {"synthetic": ["a", "b", "c"], "uci-har": ["acc", "gyro"]}


def modality_names(g: Gen, dataset: Any) -> list[str]:
    """Mostly the dataset's own modality names, sometimes the other dataset's."""
    other = not isinstance(dataset, str) or dataset not in NAMES or g.hit(max(3, g.chaos))
    return NAMES["uci-har" if dataset == "synthetic" else "synthetic"] if other else NAMES[dataset]


def data_table(g: Gen, root: Path) -> dict[str, Any]:
    name = g.value(["synthetic"] * 5 + ["uci-har"] * 2 + ["hapt", "av-digits", "captions"], ["nope"])
    names = modality_names(g, name)
    options: dict[str, Callable[[], Any]] = {
        "synthetic": lambda: synthetic_options(g),
        "uci-har": lambda: uci_har_options(g, root),
        "hapt": lambda: hapt_options(g),
        "av-digits": lambda: av_digits_options(g),
        "captions": lambda: captions_options(g),
    }
    # Mostly the named dataset's own options; sometimes another loader's.
    other = not (isinstance(name, str) and name in options) or g.hit(max(2, g.chaos / 2))
    kind = g.draw(st.sampled_from(sorted(options))) if other else name
    table = g.table(
        {
            "clients": lambda: g.value([None, 1, 2, 3, 5], [0, 1000, 2**40]),
            "partition": lambda: g.value(["iid", "dirichlet", "natural"], ["IID"]),
            "alpha": lambda: g.value([0.1, 0.5, 10.0], [1e-300, 1e300]),
            "unimodal_fraction": lambda: g.value([0.0, 0.5, 1.0], [1.01]),
            "missing_rate": lambda: g.value([0.0, 0.3, 1.0]),
            "incomplete_fraction": lambda: g.value([0.0, 0.5, 1.0]),
            "missing_label_rate": lambda: g.value([0.0, 0.5, 1.0]),
            "label_noise_rate": lambda: g.value([0.0, 0.5, 1.0]),
            "validation_fraction": lambda: g.value([0.0, 0.2, 0.5], [0.99, 1.0]),
            "min_samples": lambda: g.value([0, 1, 2], [1000]),
            "modalities": lambda: g.value(
                [None, names[:1], names[:2], names[1::-1]], [[], ["zz"], [names[0]] * 2]
            ),
            "options": lambda: g.value(st.just(0).map(lambda _: options[kind]())),
        },
        required=("options",),
    )
    return table if g.hit(g.chaos / 4) else {"name": name, **table}


# The options each encoder kind takes, with values around their valid ranges.
def encoder_option_fields(g: Gen) -> dict[str, dict[str, Callable[[], Any]]]:
    size = lambda: g.value(st.integers(1, 8), [0, -1])  # noqa: E731
    return {
        "mlp": {"hidden": size, "layers": lambda: g.value([1, 2, 3], [0])},
        "cnn": {"channels": size},
        "conv1d": {"channels": size},
        "lstm": {"hidden": size},
        "transformer": {
            "layers": lambda: g.value([1, 2], [0]),
            "heads": lambda: g.value([1, 2, 3, 4], [0]),
            "ff_dim": lambda: g.value([None, 4, 8], [0]),
            "vocab_size": lambda: g.value([10, 50], [0]),
            "tokens": lambda: g.value([1, 2, 4, 8], [0, 3]),
            "max_len": lambda: g.value([8, 64], [0, 1]),
            "projection": lambda: g.value([None, 4], [0]),
        },
    }


def model_table(g: Gen, dataset: Any) -> dict[str, Any]:
    kinds = ["auto", "mlp", "cnn", "conv1d", "lstm", "transformer"]
    names = modality_names(g, dataset)
    fields = encoder_option_fields(g)

    def encoders() -> dict[str, Any]:
        chosen = g.draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        return {m: g.value(kinds, ["Transformer", "vit"]) for m in chosen}

    def encoder_options() -> dict[str, Any]:
        chosen = g.draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        return {m: g.table(fields[g.draw(st.sampled_from(sorted(fields)))]) for m in chosen}

    return g.table(
        {
            "fusion": lambda: g.value(["concat", "attention"], ["sum"]),
            "embed_dim": lambda: g.value(st.integers(1, 16), [0, 2**40]),
            "hidden": lambda: g.value(st.integers(1, 16), [0]),
            "encoders": lambda: g.value(st.just(0).map(lambda _: encoders())),
            "encoder_options": lambda: g.value(st.just(0).map(lambda _: encoder_options()), [{"a": 1}]),
        }
    )


def strategy_table(g: Gen) -> dict[str, Any]:
    return g.table(
        {
            "clients_per_round": lambda: g.value([None, 1, 3], [0]),
            "fraction": lambda: g.value([None, 0.5, 1.0], [0.0, 1.5]),
            "min_clients": lambda: g.value([1, 2], [0]),
            "local_epochs": lambda: g.value([1, 2], [0]),
            "batch_size": lambda: g.value([1, 32], [0]),
            "lr": lambda: g.value([0.01, 0.05], [0.0]),
            "optimizer": lambda: g.value(["sgd", "adam", "adamw"], ["rmsprop"]),
            "momentum": lambda: g.value([0.0, 0.9], [1.0]),
            "weight_decay": lambda: g.value([0.0, 1e-4], [-1.0]),
        }
    )


# -- technique arguments, from each installed technique's constructor ---------------------------


def _technique_signatures() -> dict[str, dict[str, tuple[Any, Any]] | None]:
    """Installed technique → argument → (default, type hint); None where a class cannot load."""
    out: dict[str, dict[str, tuple[Any, Any]] | None] = {}
    for name, ep in sorted(technique_classes().items()):
        try:
            cls = ep.load()
            # The class's signature: a technique's declared arguments (Technique.Arguments), or its
            # own constructor's parameters.
            params = inspect.signature(cls).parameters
            try:
                hints = typing.get_type_hints(cls.__init__)
            except Exception:
                hints = {}
        except Exception:
            out[name] = None
            continue
        out[name] = {
            p: (
                v.default,
                v.annotation
                if v.annotation is not v.empty and not isinstance(v.annotation, str)
                else hints.get(p, Any),
            )
            for p, v in params.items()
            if p != "self" and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)
        }
    return out


TECHNIQUES = _technique_signatures()


def candidates(default: Any, hint: Any) -> tuple[list[Any], list[Any]]:
    """Values a user might write for an argument of type ``hint``: (likely valid, likely not)."""
    mild: list[Any] = [] if default is inspect.Parameter.empty else [default]
    if isinstance(default, int | float) and not isinstance(default, bool) and default:
        mild += [type(default)(default * 2)]
    wild: list[Any] = []
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    types = args if origin in (typing.Union, type(int | None)) else (hint,)
    for t in types:
        o, a = typing.get_origin(t), typing.get_args(t)
        if t is type(None):
            mild.append(None)
        elif t is bool:
            mild += [True, False]
        elif t is int:
            wild += [0, 1, 2, 3, 8, -1]
        elif t is float:
            wild += [0.0, 0.01, 0.5, 1.0, 1.5, 2.0, -0.5, INF]
        elif t is str:
            wild += ["x", "./absent"]
        elif o is typing.Literal:
            mild += list(a)
            wild.append("foo")
        elif o in (Mapping, dict) or t in (Mapping, dict):
            wild += [{}, {"a": 1}, {"x": "y"}]
        elif o in (Sequence, list, tuple):
            item = a[0] if a else Any
            wild += [[1], [1, 2], [0, 3], []] if item is int else [["a", "b"], ["a"], ["a", "b", "c"]]
        else:
            wild += [None, "foo"]
    return mild or [None], wild


def technique_table(g: Gen) -> dict[str, Any]:
    installed = sorted(TECHNIQUES)
    name = g.value(installed or ["nope"], ["nope", *[typo(n, 3) for n in installed]])
    args = (TECHNIQUES.get(name) or {}) if isinstance(name, str) else {}
    table = g.table(
        {arg: (lambda d=default, h=hint: g.value(*candidates(d, h))) for arg, (default, hint) in args.items()}
    )
    return {"name": name, **table}


@st.composite
def raw_configs(draw: Callable[..., Any], root: Path) -> dict[str, Any]:
    g = Gen(draw, draw(st.sampled_from([0, 0, 2, 8, 25])))
    raw: dict[str, Any] = {"data": data_table(g, root)}
    dataset = raw["data"].get("name")
    for section, make in (
        ("run", run_table),
        ("model", lambda g: model_table(g, dataset)),
        ("strategy", strategy_table),
    ):
        if draw(st.booleans()):
            raw[section] = make(g)
    if not g.hit(40):
        raw["techniques"] = [technique_table(g) for _ in range(draw(st.integers(1, 2)))]
    if g.hit(g.chaos / 10):
        raw[g.draw(st.sampled_from(["Data", "technique", "model2"]))] = {}
    return raw


# -- the driver ---------------------------------------------------------------------------------


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, Mapping):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list | tuple):
        return [i for v in value for i in _ints(v)]
    return []


def buildable(cfg: RunConfig) -> bool:
    """Tiny enough to build data and model in milliseconds (no huge sizes, no file-less loaders)."""
    if cfg.data.name not in ("synthetic", "uci-har"):
        return False
    if cfg.data.name == "synthetic" and not isinstance(cfg.data.options.get("num_samples"), int):
        return False  # the default, 10 000 samples, is not tiny
    dump = cfg.model_dump()
    dump["run"].pop("seed")
    techniques = dump.pop("techniques")
    # Technique sizes (sketch buckets, epochs of FedMVP's extractors on a few dozen samples) are cheap.
    return all(abs(i) <= SMALL_INT for i in _ints(dump)) and all(abs(i) <= 300 for i in _ints(techniques))


def check_config(raw: dict[str, Any]) -> str:
    """Drive ``raw`` as far as it goes; FedmmErrors end it. Returns how far it got."""
    try:
        cfg = parse_config(raw, "fuzz.toml")
    except FedmmError:
        return "refused by validation"
    for i, section in enumerate(cfg.techniques):
        try:
            build_technique(section, i)
        except ConfigError as exc:
            if section.name in TECHNIQUES and "missing required argument" not in str(exc):
                # An installed technique refuses a value: the message names the table and field.
                field = re.escape(f"[[techniques]] #{i + 1} ({section.name}).") + r".*?: "
                assert re.match(field, str(exc)), f"technique error does not name its field: {exc}"
            return "refused by a technique"
    try:
        strategy = build_strategy(cfg)
    except FedmmError:
        return "refused by the strategy"
    if not buildable(cfg):
        return "valid (too large to build here)"
    try:
        data = build_dataset(cfg)
    except FedmmError:
        return "refused by the data"
    try:
        build_model(cfg, data, strategy)
    except FedmmError:
        return "refused by the model"
    return "built"


@pytest.fixture(scope="module")
def scanned_once() -> Iterator[None]:
    """Entry points scanned once for the module: a scan reads every installed package's metadata
    (tens of milliseconds), which would otherwise dominate each example."""
    techniques, datasets = config.technique_classes(), registry.available()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "technique_classes", lambda: techniques)
        patch.setattr(registry, "available", lambda: datasets)
        yield


@pytest.fixture(scope="module")
def uci_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A six-window UCI HAR Dataset folder (three subjects, every class once)."""
    root = tmp_path_factory.mktemp("uci") / "UCI HAR Dataset"
    rng = np.random.default_rng(0)
    for split, labels, subjects in (
        ("train", [1, 2, 3, 4, 5, 6], [1, 1, 3, 3, 5, 5]),
        ("test", [6, 1], [2, 9]),
    ):
        sig = root / split / "Inertial Signals"
        sig.mkdir(parents=True)
        (root / split / f"y_{split}.txt").write_text("".join(f"{v}\n" for v in labels))
        (root / split / f"subject_{split}.txt").write_text("".join(f"{v}\n" for v in subjects))
        for kind in ("body_acc", "body_gyro", "total_acc"):
            for axis in "xyz":
                rows = rng.standard_normal((len(labels), 128))
                (sig / f"{kind}_{axis}_{split}.txt").write_text(
                    "\n".join(" ".join(f"{v:.4e}" for v in row) for row in rows) + "\n"
                )
    return root


def test_installed_techniques_load_for_the_fuzz() -> None:
    # The fuzz derives technique arguments from constructors: each installed one must load.
    assert [name for name, args in TECHNIQUES.items() if args is None] == []


def _fuzz(examples: int) -> Any:
    return settings(
        derandomize=True,
        max_examples=examples,
        deadline=None,
        # The generator draws many small choices per config (one per field): that is the point.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


@_fuzz(300)
@given(data=st.data())
def test_fuzzed_configs_raise_only_fedmm_errors(
    scanned_once: None, uci_root: Path, data: st.DataObject
) -> None:
    raw = data.draw(raw_configs(uci_root), label="config")
    event(check_config(raw))


# The same property on ten times the examples (the fuzz that found the causes pinned below).
@pytest.mark.integration
@_fuzz(3000)
@given(data=st.data())
def test_many_fuzzed_configs_raise_only_fedmm_errors(
    scanned_once: None, uci_root: Path, data: st.DataObject
) -> None:
    raw = data.draw(raw_configs(uci_root), label="config")
    event(check_config(raw))


# -- each cause the fuzz found, pinned by name -----------------------------------------------------


def _parse_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "cfg.toml")
    return str(info.value)


TINY = {"num_samples": 40, "test_samples": 10}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("seed", "[data].options.seed: not a dataset option: the run's seed is [run].seed"),
        ("clients", "[data].options.clients: not a dataset option: set [data].clients instead"),
        ("alpha", "[data].options.alpha: not a dataset option: set [data].alpha instead"),
    ],
)
def test_data_options_that_the_federation_sets_are_refused_not_a_type_error(
    option: str, message: str
) -> None:
    # Was: TypeError "load() got multiple values for keyword argument 'seed'" from build_dataset.
    for dataset in ("synthetic", "my-plugin-dataset"):
        assert message in _parse_error({"data": {"name": dataset, "options": {**TINY, option: 3}}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_samples": 2.5}, "[data].options.num_samples: Input should be a valid integer (got 2.5)"),
        ({"num_samples": "40"}, "[data].options.num_samples: Input should be a valid integer (got '40')"),
        ({"noise": "high"}, "[data].options.noise: Input should be a valid number (got 'high')"),
        ({"noise": -1}, "[data].options.noise: Input should be greater than or equal to 0 (got -1)"),
        ({"num_classes": True}, "[data].options.num_classes: Input should be a valid integer (got True)"),
        ({"modalities": [["a", "8"]]}, "[data].options.modalities[0].dim: Input should be a valid integer"),
        ({"modalities": [["a"]]}, "[data].options.modalities[0]: a modality is [name, dim]"),
        ({"modalities": [["a", 2], ["a", 3]]}, "modality names must be distinct; 'a' repeats"),
        (
            {"nosie": 0.5},
            "[data].options.nosie: unknown option (did you mean 'noise'?); the options of 'synthetic' "
            "are modalities, noise, num_classes, num_samples, separation, test_samples",
        ),
    ],
)
def test_synthetic_options_of_the_wrong_type_are_named(options: dict[str, Any], message: str) -> None:
    # Were: TypeError ('<=' not supported ...), ValueError (non-broadcastable operand) from the loader.
    assert message in _parse_error({"data": {"name": "synthetic", "options": {**TINY, **options}}})


def test_synthetic_modalities_may_be_tables() -> None:
    modalities = [{"name": "x", "dim": 3}, ["y", 2, 0.5]]
    cfg = parse_config(
        {"data": {"name": "synthetic", "clients": 2, "options": {**TINY, "modalities": modalities}}}
    )
    assert build_dataset(cfg).modality_names == ("x", "y")


def test_synthetic_loader_refuses_repeated_modality_names() -> None:
    from fedmm.core.data.synthetic import make_synthetic
    from fedmm.core.errors import DataError

    with pytest.raises(DataError, match=r"modality names must be distinct, got \['a', 'a'\]"):
        make_synthetic(20, modalities=[("a", 2, 1.0), ("a", 3, 1.0)])


def test_uci_har_acc_source_gravity_is_refused_with_the_choices(uci_root: Path) -> None:
    from fedmm.core.data import uci_har

    raw = {"data": {"name": "uci-har", "options": {"path": str(uci_root), "acc_source": "gravity"}}}
    assert "[data].options.acc_source: Input should be 'total' or 'body' (got 'gravity')" in _parse_error(raw)
    # Called from Python, the loader says the same before reading any file (was a bare ValueError).
    with pytest.raises(
        ConfigError, match=r"uci-har: acc_source must be one of 'total', 'body', got 'gravity'"
    ):
        uci_har.load_central(uci_root, acc_source="gravity")  # type: ignore[arg-type]


def test_other_loaders_options_are_checked_before_loading() -> None:
    # hapt and av-digits build caches and captions reads a folder: a bad option is named first.
    assert "[data].options.window: Input should be greater than or equal to 2 (got 1)" in _parse_error(
        {"data": {"name": "hapt", "options": {"window": 1}}}
    )
    assert "[data].options.n_mel: unknown option (did you mean 'n_mels'?)" in _parse_error(
        {"data": {"name": "av-digits", "options": {"n_mel": 8}}}
    )
    assert "[data].options.path: required option is missing" in _parse_error(
        {"data": {"name": "captions", "options": {"layout": "coco"}}}
    )


def test_option_schemas_match_the_loaders_keyword_arguments() -> None:
    # The schemas mirror the loaders' signatures: a new or renamed loader argument must be added there.
    from fedmm.core.data.options import OPTIONS
    from fedmm.core.data.synthetic import make_synthetic

    for name, schema in OPTIONS.items():
        # synthetic's registered loader passes **kwargs on to make_synthetic.
        loader = make_synthetic if name == "synthetic" else registry._resolve(registry.BUILTIN[name].loader)
        params = inspect.signature(loader).parameters
        assert set(schema.model_fields) == set(params), name
        for field, info in schema.model_fields.items():
            default = params[field].default
            if default is not inspect.Parameter.empty and field != "modalities":
                assert info.default == default, (name, field)


def test_transformer_heads_must_divide_embed_dim() -> None:
    # Was: torch's AssertionError "embed_dim must be divisible by num_heads" from deep inside.
    raw = {"data": {"name": "synthetic"}, "model": {"embed_dim": 6, "encoders": {"a": "transformer"}}}
    assert (
        "[model].encoder_options.a.heads: = 4 (the default) must divide embed_dim = 6: set heads to one of "
        "1, 2, 3, 6, or change [model].embed_dim"
    ) in _parse_error({**raw, "model": {**raw["model"], "encoder_options": {"a": {"tokens": 2}}}})
    # An "auto" encoder resolves to a transformer only once the data is loaded: refused then.
    from fedmm.core.data.types import ModalitySpec
    from fedmm.core.models.encoders import build_encoder

    with pytest.raises(ConfigError, match=r"\(transformer encoder\): heads = 4 must divide embed_dim = 6"):
        build_encoder(ModalitySpec("text", (8,), "tokens"), "auto", 6, heads=4)


def test_a_misspelt_encoder_option_is_named_with_the_right_one() -> None:
    # Was: TypeError "MLPEncoder.__init__() got an unexpected keyword argument" when building the model.
    raw = {"data": {"name": "synthetic"}, "model": {"encoders": {"a": "transformer"}}}
    assert (
        "[model].encoder_options.a.heds: is not an option of the transformer encoder (did you mean "
        "'heads'?); its options: ff_dim, heads, layers, max_len, projection, tokens, vocab_size"
    ) in _parse_error({**raw, "model": {**raw["model"], "encoder_options": {"a": {"heds": 2}}}})
    # With kind "auto" the option must exist for some encoder; the data decides which one applies.
    auto = {
        "data": {"name": "synthetic", "clients": 2, "options": TINY},
        "model": {"encoder_options": {"a": {"channels": 4}}},
    }
    cfg = parse_config(auto)
    with pytest.raises(
        ConfigError, match=r"'a' \(mlp encoder\): channels is not an option of the mlp encoder"
    ):
        build_model(cfg, build_dataset(cfg))
    assert "[model].encoder_options.a.widht: is not an option of any encoder" in _parse_error(
        {"data": {"name": "synthetic"}, "model": {"encoder_options": {"a": {"widht": 4}}}}
    )


def test_encoder_options_for_a_modality_the_data_lacks_are_refused() -> None:
    cfg = parse_config(
        {
            "data": {"name": "synthetic", "clients": 2, "options": TINY},
            "model": {"encoder_options": {"z": {"hidden": 4}}},
        }
    )
    with pytest.raises(ConfigError, match=r"encoder_options given for unknown modalities \['z'\]"):
        build_model(cfg, build_dataset(cfg))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"strategy": {"lr": math.inf}}, "[strategy].lr: Input should be a finite number (got inf)"),
        ({"data": {"name": "synthetic", "alpha": math.nan}}, "[data].alpha: Input should be a finite number"),
        ({"run": {"seed": -1}}, "[run].seed: Input should be greater than or equal to 0 (got -1)"),
    ],
)
def test_infinite_numbers_and_negative_seeds_are_refused(raw: dict[str, Any], message: str) -> None:
    # Were: a run that trains on inf, and numpy's ValueError for a negative seed.
    assert message in _parse_error({"data": {"name": "synthetic"}, **raw})


def test_a_config_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    from fedmm.core.config import load_config

    path = tmp_path / "latin1.toml"
    path.write_bytes('[run]\nname = "caf\u00e9"\n'.encode("latin-1"))  # Was: UnicodeDecodeError.
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text \(byte 0xe9 on line 2\)"):
        load_config(path)


def test_a_config_path_that_is_a_directory_is_one_clear_error(tmp_path: Path) -> None:
    from fedmm.core.config import load_config

    with pytest.raises(ConfigError, match="is a directory, not a config file"):  # Was: IsADirectoryError.
        load_config(tmp_path)


class _Echo:
    """A technique-like class whose constructor checks its argument as techniques now do."""

    def __init__(self, level: int = 1) -> None:
        from fedmm.core.arguments import integer

        self.level = integer("echo", "level", level, low=1)


class _FakeEntryPoint:
    name = "echo"

    def load(self) -> type[_Echo]:
        return _Echo


def test_technique_errors_name_the_table_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: "[[techniques]] #1 (bmsfed): could not convert string to float: 'high'".
    monkeypatch.setattr(config, "technique_classes", lambda: {"echo": _FakeEntryPoint()})

    def error(args: dict[str, Any]) -> str:
        cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "echo", **args}]})
        with pytest.raises(ConfigError) as info:
            build_technique(cfg.techniques[0])
        return str(info.value)

    assert error({"level": "high"}) == "[[techniques]] #1 (echo).level: must be an integer >= 1, got 'high'"
    assert error({"levle": 3}) == (
        "[[techniques]] #1 (echo).levle: unknown argument (did you mean 'level'?); "
        "the arguments of _Echo are level"
    )
