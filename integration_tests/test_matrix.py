"""The technique matrix: every registered technique alone and in pairs (triples: ``-m slow``).

A technique joins by registering itself (entry point group ``fedmm.techniques``). Every
technique is built with its defaults, on one small recipe that suits them all: synthetic data
with two modalities, a server validation split, 30 % of the samples missing a modality, and
layered (transformer) encoders. A combination must either run two rounds with finite metrics or
refuse with one clear :class:`~fedmm.core.errors.ConfigError` (e.g. two owners of one step, or a
technique whose model another replaced) — never another exception. Pairs that refuse are listed
in ``REFUSED`` with the reason; every other pair must run.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from fedmm.core import FedAvg, Federation, datasets
from fedmm.core.config import TECHNIQUE_PACKAGES, technique_classes
from fedmm.core.errors import ConfigError
from fedmm.core.models import late_fusion

REGISTERED = sorted(technique_classes())

# Pairs that must refuse, and why (a pair not listed must run).
REFUSED = {
    ("fedmfs", "fedmvp"): "both own create_model: each needs its own model",
    ("fedmfs", "layerwise"): "FedMFS's per-modality models have no layered encoders",
    ("fedmvp", "layerwise"): "FedMVP's joint encoder sits on frozen extractors: no layered encoders",
}


def _run(names: tuple[str, ...], engine: str = "inprocess", histories: list[Any] | None = None) -> str:
    """'ran' or 'refused: <message>' (the run's history is appended to ``histories``)."""
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
    techniques: list[Any] = [technique_classes()[n].load()() for n in names]
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
        history = Federation(model, data, strategy, seed=0).run(2, progress=False, engine=engine)
    except ConfigError as exc:
        return f"refused: {exc}"
    for r in history.rounds:
        assert not r["skipped"], f"{names}: round {r['round']} skipped (every client failed)"
        assert math.isfinite(r["accuracy"]), f"{names}: accuracy {r['accuracy']}"
    if histories is not None:
        histories.append(history)
    return "ran"


def test_every_registered_technique_is_known_to_the_install_hint() -> None:
    for name, ep in technique_classes().items():
        assert TECHNIQUE_PACKAGES.get(name) == ep.dist.name, (name, ep.dist.name if ep.dist else None)


@pytest.mark.parametrize("name", REGISTERED)
def test_each_technique_alone_runs(name: str) -> None:
    assert _run((name,)) == "ran"


@pytest.mark.parametrize("pair", list(itertools.combinations(REGISTERED, 2)), ids="+".join)
def test_pairs_run_or_refuse_as_documented(pair: tuple[str, str]) -> None:
    outcome = _run(pair)
    if pair in REFUSED:
        assert outcome.startswith("refused: "), f"{pair} should refuse ({REFUSED[pair]}) but {outcome}"
    else:
        assert outcome == "ran", outcome


# Pairs also run on Flower's simulation engine in the default suite (each alone: ``-m slow``).
FLOWER_PAIRS = [
    ("bmsfed", "fedmfs"),
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


@pytest.mark.parametrize("pair", FLOWER_PAIRS, ids="+".join)
def test_pairs_give_the_same_metrics_on_flower(pair: tuple[str, str]) -> None:
    _same_on_flower(pair)


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTERED)
def test_each_technique_gives_the_same_metrics_on_flower(name: str) -> None:
    _same_on_flower((name,))


@pytest.mark.slow
@pytest.mark.parametrize("triple", list(itertools.combinations(REGISTERED, 3)), ids="+".join)
def test_triples_run_or_refuse_clearly(triple: tuple[str, str, str]) -> None:
    outcome = _run(triple)
    assert outcome == "ran" or outcome.startswith("refused: "), outcome
