"""The technique matrix: every registered technique alone and in pairs (the pairs that run, the
triples and the Flower runs: ``-m integration``).

A technique joins by registering itself (entry point group ``fedmm.techniques``). Every
technique is built with its defaults, on one small recipe that suits them all: synthetic data
with two modalities, a server validation split, 30 % of the samples missing a modality, and
layered (transformer) encoders. A combination must either run two rounds with finite metrics and
**no client dropped in any round**, or refuse before any round with the one
:class:`~fedmm.core.errors.ConfigError` listed for it in ``REFUSED`` (the exact message, which names
both techniques and why) — never another exception, never clients dropped round after round.
The rules behind the table: ``docs/architecture.md`` ("Which techniques combine").
"""

from __future__ import annotations

import contextlib
import itertools
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmm.core import FedAvg, Federation, datasets
from fedmm.core.catalog import read_catalog, technique_catalog
from fedmm.core.config import technique_classes
from fedmm.core.errors import ConfigError
from fedmm.core.models import late_fusion

REGISTERED = sorted(technique_classes())


def _no(a: str, b: str, reason: str) -> str:
    return f"techniques '{a}' and '{b}' cannot be combined: {reason}"


def _not_in_order(a: str, b: str, field: str) -> str:
    return (
        f"techniques '{a}' and '{b}' cannot be combined in this order: {b} replaces the plan's '{field}' "
        f"for some clients, discarding what {a} planned there; list {b} before {a}"
    )


ENSEMBLE = "fedmfs builds its own model (a per-modality ensemble)"
FEDMVP = "fedmvp builds its own model (a joint encoder on frozen pre-trained extractors)"
FUSION = (
    "bmsfed needs the 'fusion' parameter group (its weak-modality and single-modality clients train "
    f"encoder.<m>, fusion and head), but {ENSEMBLE}, which has no 'fusion' group"
)
LAYERED = "layerwise needs layered encoders (groups encoder.<m>.<i>; it grows and trains them layer by layer)"
SCHEDULES = (
    "both own the plan's 'combinations' (each schedules a client's local steps over modality "
    "combinations), and a strategy can have only one owner"
)
BUILDERS = "both build the model ({}), and a strategy uses one model"
ENSEMBLE_MVP = "fedmfs: a per-modality ensemble; fedmvp: a joint encoder on frozen pre-trained extractors"
MVP_ENSEMBLE = "fedmvp: a joint encoder on frozen pre-trained extractors; fedmfs: a per-modality ensemble"

# Combinations of two that must refuse, in list order, with the error each gives. A pair not
# listed must run with no client dropped. Most refuse in either order; a few only in one.
REFUSED = {
    # BMSFed's weak-modality clients train 'fusion'; FedMFS's ensemble has none (issue 15; on late
    # fusion the pair runs: LATE_FUSION below).
    ("bmsfed", "fedmfs"): _no("bmsfed", "fedmfs", FUSION),
    ("fedmfs", "bmsfed"): _no("fedmfs", "bmsfed", FUSION),
    # One model per strategy (FedMFS's default ensemble; on late fusion it runs: LATE_FUSION below).
    ("fedmfs", "fedmvp"): _no("fedmfs", "fedmvp", BUILDERS.format(ENSEMBLE_MVP)),
    ("fedmvp", "fedmfs"): _no("fedmvp", "fedmfs", BUILDERS.format(MVP_ENSEMBLE)),
    # Layer-wise training needs layered encoders; neither built model has any.
    ("fedmfs", "layerwise"): _no("fedmfs", "layerwise", f"{LAYERED}, but {ENSEMBLE}, which has none"),
    ("layerwise", "fedmfs"): _no("layerwise", "fedmfs", f"{LAYERED}, but {ENSEMBLE}, which has none"),
    ("fedmvp", "layerwise"): _no("fedmvp", "layerwise", f"{LAYERED}, but {FEDMVP}, which has none"),
    ("layerwise", "fedmvp"): _no("layerwise", "fedmvp", f"{LAYERED}, but {FEDMVP}, which has none"),
    # One schedule of the local steps per strategy.
    ("entire_update", "flexmod"): _no("entire_update", "flexmod", SCHEDULES),
    ("flexmod", "entire_update"): _no("flexmod", "entire_update", SCHEDULES),
    ("entire_update", "partial_update"): _no("entire_update", "partial_update", SCHEDULES),
    ("partial_update", "entire_update"): _no("partial_update", "entire_update", SCHEDULES),
    ("flexmod", "partial_update"): _no("flexmod", "partial_update", SCHEDULES),
    ("partial_update", "flexmod"): _no("partial_update", "flexmod", SCHEDULES),
    # BMSFed replaces its weak-modality clients' plan: listed first, the others keep within it.
    ("entire_update", "bmsfed"): _not_in_order("entire_update", "bmsfed", "combinations"),
    ("flexmod", "bmsfed"): _not_in_order("flexmod", "bmsfed", "combinations"),
    ("partial_update", "bmsfed"): _not_in_order("partial_update", "bmsfed", "combinations"),
    ("layerwise", "bmsfed"): _not_in_order("layerwise", "bmsfed", "train"),
}
# FedNova replaces the server's averaging (normalised by local steps), as FedMVP's CKA weighting
# does: one owner of 'aggregate' per strategy.
AGGREGATORS = (
    "both own the 'aggregate' step (each replaces the server's averaging), and a strategy can have "
    "only one owner"
)
REFUSED[("fedmvp", "fednova")] = _no("fedmvp", "fednova", AGGREGATORS)
REFUSED[("fednova", "fedmvp")] = _no("fednova", "fedmvp", AGGREGATORS)
# RandomUpload is FedMFS with a random choice of uploads: it builds the same per-modality ensemble,
# so it refuses wherever FedMFS does (the same errors, naming random_upload), and the two together
# would build two models.
REFUSED.update(
    {
        tuple("random_upload" if n == "fedmfs" else n for n in pair): message.replace(
            "fedmfs", "random_upload"
        )
        for pair, message in REFUSED.items()
        if "fedmfs" in pair
    }
)
_TWO_ENSEMBLES = "fedmfs: a per-modality ensemble; random_upload: a per-modality ensemble"
REFUSED[("fedmfs", "random_upload")] = _no("fedmfs", "random_upload", BUILDERS.format(_TWO_ENSEMBLES))
REFUSED[("random_upload", "fedmfs")] = _no(
    "random_upload",
    "fedmfs",
    BUILDERS.format("random_upload: a per-modality ensemble; fedmfs: a per-modality ensemble"),
)


def _refusals(names: tuple[str, ...]) -> set[str]:
    """The errors a combination may give: those of its refused pairs, in its list order."""
    return {REFUSED[p] for p in itertools.combinations(names, 2) if p in REFUSED}


def _run(
    names: tuple[str, ...],
    engine: str = "inprocess",
    histories: list[Any] | None = None,
    rounds: int = 2,
    arguments: dict[str, dict[str, Any]] | None = None,
    default_device: str | None = None,
) -> str:
    """'ran' or 'refused: <message>' (the run's history is appended to ``histories``); with
    ``rounds=0`` only the strategy, the model and the federation are built. Techniques take their
    defaults, or their ``arguments`` (name → keyword arguments). ``default_device`` is torch's
    default device while the rounds run (not while the model is built)."""
    data = datasets.load(
        "synthetic",
        clients=6,
        partition="iid",
        num_samples=480,
        test_samples=120,
        incomplete_fraction=0.3,
        validation_fraction=0.2,
        seed=0,
    )
    techniques: list[Any] = [technique_classes()[n].load()(**(arguments or {}).get(n, {})) for n in names]
    try:
        strategy = FedAvg(techniques, optimizer="adam", lr=3e-3)
        torch.manual_seed(0)
        model = strategy.create_model(data, {}) or late_fusion(
            data.modalities,
            data.num_classes,
            embed_dim=16,
            hidden=16,
            encoders={m.name: "transformer" for m in data.modalities},
            encoder_options={m.name: {"layers": 2, "heads": 2, "tokens": 4} for m in data.modalities},
        )
        fed = Federation(model, data, strategy, seed=0)
        if rounds == 0:
            return "built"
        with torch.device(default_device) if default_device else contextlib.nullcontext():
            history = fed.run(rounds, progress=False, engine=engine)
    except ConfigError as exc:
        return f"refused: {exc}"
    for r in history.rounds:
        assert not r["skipped"], f"{names}: round {r['round']} skipped (every client failed)"
        assert r["dropped"] == 0, f"{names}: round {r['round']} dropped {r['dropped']} clients"
        assert math.isfinite(r["accuracy"]), f"{names}: accuracy {r['accuracy']}"
    if histories is not None:
        histories.append(history)
    return "ran"


def _check(names: tuple[str, ...], outcome: str) -> None:
    expected = _refusals(names)
    if expected:
        got = outcome.removeprefix("refused: ")
        assert got in expected, f"{names}: expected one of {expected}, got {outcome}"
    else:
        assert outcome in ("ran", "built"), f"{names}: {outcome}"


ROOT = Path(__file__).resolve().parents[1]


def _workspace_techniques() -> dict[str, str]:
    """Technique name → the workspace package that registers it, from the members' pyproject files."""
    out: dict[str, str] = {}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for name in project.get("entry-points", {}).get("fedmm.techniques", {}):
            out[name] = project["name"]
    return out


def test_the_suite_catalog_names_the_package_of_every_workspace_technique() -> None:
    # The "pip install <package>" hint for a technique that is not installed comes from this file.
    catalog = read_catalog(ROOT / "packages/fedmm-suite/src/fedmm/suite/catalog.toml")
    listed = {name: package for package, names in catalog.items() for name in names}
    assert sum(map(len, catalog.values())) == len(listed), "a technique is listed twice"
    assert listed == _workspace_techniques()


def test_every_registered_technique_is_known_to_the_install_hint() -> None:
    known = technique_catalog()
    for name, ep in technique_classes().items():
        assert ep.dist is not None and known.get(name) == (ep.dist.name,), (name, known.get(name))


@pytest.mark.parametrize("name", REGISTERED)
def test_each_technique_alone_runs(name: str) -> None:
    assert _run((name,)) == "ran"


def _tiered(combos: list[tuple[str, ...]]) -> list[Any]:
    """Refusals (cheap: checked before round 1) in the fast tier; combinations that run two rounds
    in the integration tier (each technique alone, and the compositions of
    ``test_compositions.py``, keep running ones in the fast tier)."""
    return [
        pytest.param(c, id="+".join(c), marks=() if _refusals(c) else pytest.mark.integration) for c in combos
    ]


@pytest.mark.parametrize("pair", _tiered(list(itertools.combinations(REGISTERED, 2))))
def test_pairs_run_or_refuse_as_documented(pair: tuple[str, str]) -> None:
    _check(pair, _run(pair))


def _sets_plan_fields(name: str) -> bool:
    cls = technique_classes()[name].load()
    return bool(cls.writes | cls.overwrites | (cls.owns - {"select_clients", "aggregate", "create_model"}))


@pytest.mark.parametrize("pair", [(b, a) for a, b in itertools.combinations(REGISTERED, 2)], ids="+".join)
def test_pairs_in_the_other_order_refuse_as_documented(pair: tuple[str, str]) -> None:
    # Built only, unless both set plan fields (then the order could change what runs): run too.
    both_plan = all(_sets_plan_fields(n) for n in pair)
    _check(pair, _run(pair, rounds=2 if both_plan else 0))


# What a technique declares follows its arguments: FedMFS (and RandomUpload) with core's late-fusion
# model build no model of their own, so where their ensemble is refused (a second model builder,
# a model without 'fusion') they combine: one order of each pair runs a round, the other is built
# (the checks all run before round 1).
LATE_FUSION = [
    pytest.param(pair, rounds, id="+".join(pair))
    for pair, rounds in [
        (("fedmfs", "fedmvp"), 1),
        (("fedmvp", "fedmfs"), 0),
        (("random_upload", "fedmvp"), 0),
        (("bmsfed", "fedmfs"), 1),
        (("fedmfs", "bmsfed"), 0),
    ]
]


@pytest.mark.parametrize(("pair", "rounds"), LATE_FUSION)
def test_fedmfs_on_late_fusion_combines_where_its_ensemble_is_refused(
    pair: tuple[str, str], rounds: int
) -> None:
    assert pair in REFUSED  # with the default model="ensemble"
    late = {n: {"model": "late_fusion"} for n in ("fedmfs", "random_upload")}
    assert _run(pair, rounds=rounds, arguments=late) == ("ran" if rounds else "built")


def test_every_listed_refusal_is_of_registered_techniques() -> None:
    assert {n for pair in REFUSED for n in pair} <= set(REGISTERED)


# Pairs and each technique alone also run on Flower's simulation engine (Ray): the integration tier.
FLOWER_PAIRS = [
    ("bmsfed", "entire_update"),
    ("bmsfed", "layerwise"),
    ("bmsfed", "fedmvp"),
    ("fedmfs", "flexmod"),
]


def _same_on_flower(names: tuple[str, ...]) -> None:
    pytest.importorskip("flwr")
    missing = [n for n in names if n not in REGISTERED]
    if missing:
        pytest.skip(f"not installed: {missing}")
    torch.set_num_threads(1)
    runs: list[Any] = []
    assert _run(names, histories=runs) == "ran"
    assert _run(names, engine="flower", histories=runs) == "ran"
    inproc, flower = runs
    # Client hooks see only what crosses in the plan and their own state, so a technique gives
    # the same numbers on Flower (where its client side is a copy in another process).
    for a, b in zip(inproc.rounds, flower.rounds, strict=True):
        for key in ("accuracy", "loss", "train_loss", "dropped"):
            assert abs(a[key] - b[key]) <= 1e-4, (names, a["round"], key, a[key], b[key])


@pytest.mark.integration
@pytest.mark.parametrize("pair", FLOWER_PAIRS, ids="+".join)
def test_pairs_give_the_same_metrics_on_flower(pair: tuple[str, str]) -> None:
    _same_on_flower(pair)


@pytest.mark.integration
@pytest.mark.parametrize("name", REGISTERED)
def test_each_technique_gives_the_same_metrics_on_flower(name: str) -> None:
    _same_on_flower((name,))


# The standard algorithms (core's FedProx, SCAFFOLD, FedNova) each act through one hook (a loss
# term, or the aggregate): their pairs with every technique, both orders and on Flower, cover them;
# the triples are those of the methods (84 rather than 220 combinations in the integration tier).
ALGORITHMS = ("fedprox", "scaffold", "fednova")
METHODS = [n for n in REGISTERED if n not in ALGORITHMS]


@pytest.mark.integration
@pytest.mark.parametrize("triple", list(itertools.combinations(METHODS, 3)), ids="+".join)
def test_triples_run_or_refuse_as_documented(triple: tuple[str, str, str]) -> None:
    # A triple refuses exactly when one of its pairs does, with one of those pairs' errors.
    _check(triple, _run(triple))


@pytest.mark.parametrize("name", REGISTERED)
def test_each_technique_allocates_on_its_inputs_device(name: str) -> None:
    # With "meta" as torch's default device, any tensor made without naming its device (the way
    # a CUDA run breaks: a CPU tensor met by CUDA weights) is a meta tensor that fails the first
    # operator it meets with real data; a technique that allocates where its inputs live gives
    # the same numbers as without (to float noise: the device mode reroutes torch's dispatch).
    runs: list[Any] = []
    assert _run((name,), histories=runs) == "ran"
    assert _run((name,), histories=runs, default_device="meta") == "ran"
    plain, meta = runs
    for a, b in zip(plain.rounds, meta.rounds, strict=True):
        for key in ("accuracy", "loss", "train_loss"):
            assert abs(a[key] - b[key]) <= 1e-5, (name, a["round"], key, a[key], b[key])


NEEDS_GPU = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (run tools/device_check.py on one)"
)


@NEEDS_GPU
@pytest.mark.parametrize("name", REGISTERED)
def test_each_technique_runs_on_the_gpu(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The matrix recipe with the default device ("auto") pinned to the GPU: every client trains.
    monkeypatch.setenv("FEDMM_DEVICE", "cuda")
    assert _run((name,)) == "ran"
