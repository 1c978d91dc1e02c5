"""The BMSFed technique end to end: config, hooks, aggregation effect, checkpoint round trip."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch

from fedmm.core import datasets, models
from fedmm.core.checkpoint import split_arrays
from fedmm.core.config import build_technique, parse_config
from fedmm.core.data.registry import federate
from fedmm.core.data.synthetic import make_synthetic
from fedmm.core.data.types import Batch, FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.federation import Federation
from fedmm.core.models.model import ModelOutput
from fedmm.core.protocol import ClientContext, FedAvg, RoundContext, TrainPlan
from fedmm.select.bmsfed import BMSFed, count_sketch
from fedmm.select.bmsfed.losses import modal_enhancement_loss, prototype_temperature


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # Tiny models: one intra-op thread is much faster on a small shared CPU (as core's benches do).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(unimodal: float = 0.0, **kw: Any) -> FederatedDataset:
    return datasets.load(
        "synthetic",
        clients=8,
        partition="dirichlet",
        alpha=1.0,
        unimodal_fraction=unimodal,
        num_samples=480,
        test_samples=120,
        num_classes=4,
        seed=0,
        **kw,
    )


def _model(data: FederatedDataset) -> models.MultimodalModel:
    torch.manual_seed(0)
    encoders = {m: "mlp" for m in data.modality_names}
    return models.late_fusion(data.modalities, data.num_classes, encoders=encoders, embed_dim=16, hidden=16)


def _fed(data: FederatedDataset, tech: BMSFed) -> Federation:
    strategy = FedAvg(techniques=[tech], clients_per_round=3, local_epochs=1, batch_size=16, lr=0.05)
    return Federation(_model(data), data, strategy, seed=1, eval_every=1)


def test_config_round_trips_and_is_json() -> None:
    t = BMSFed(chi=2.0, clients_per_round=3, me_weight=0.1, sample_size=4, sketch_dim=0)
    cfg = t.config()
    json.dumps(cfg)
    assert BMSFed(**cfg).config() == cfg
    assert cfg["chi"] == 2.0 and cfg["sketch_dim"] == 0


def test_built_from_toml_section() -> None:
    raw = {"data": {"name": "synthetic"}, "techniques": [{"name": "bmsfed", "chi": 1.5}]}
    t = build_technique(parse_config(raw).techniques[0])
    assert isinstance(t, BMSFed) and t.args.chi == 1.5
    bad = {"data": {"name": "synthetic"}, "techniques": [{"name": "bmsfed", "chi": 0.5}]}
    with pytest.raises(ConfigError, match=r"\(bmsfed\)\.chi: must be a number >= 1, got 0.5"):
        build_technique(parse_config(bad).techniques[0])
    typo = {"data": {"name": "synthetic"}, "techniques": [{"name": "bmsfed", "chii": 1.5}]}
    with pytest.raises(ConfigError, match=r"\(bmsfed\)\.chii: unknown argument \(did you mean 'chi'\?\)"):
        build_technique(parse_config(typo).techniques[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chi": 0.9}, "chi"),
        ({"chi": float("nan")}, "chi"),
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"clients_per_round": 2.5}, "clients_per_round"),
        ({"me_weight": -1.0}, "me_weight"),
        ({"me_weight": float("inf")}, "me_weight"),
        ({"sketch_dim": -1}, "sketch_dim"),
        ({"sample_size": 0}, "sample_size"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_parameters_raise_clear_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BMSFed(**kwargs)


def test_more_than_two_modalities_is_a_config_error() -> None:
    central = make_synthetic(80, num_classes=3, modalities=[("a", 4, 1.0), ("b", 4, 1.0), ("c", 4, 1.0)])
    with pytest.raises(ConfigError, match="exactly two modalities") as err:
        _fed(federate(central, clients=4, seed=0), BMSFed(clients_per_round=2)).run(1, progress=False)
    # It names the ways to restrict the data that exist: the config key and the loader argument.
    assert "[data].modalities" in str(err.value) and "only_modalities=" in str(err.value)


def test_first_round_asks_everyone_then_k_with_metrics_and_prototypes() -> None:
    data = _data(unimodal=0.25)
    tech = BMSFed(chi=1.0, clients_per_round=3, me_weight=0.5)
    fed = _fed(data, tech)
    history = fed.run(4, progress=False)
    assert history.rounds[0]["selected"] == data.num_clients
    assert all(r["selected"] == 3 for r in history.rounds[1:])
    last = history.rounds[-1]
    assert "bmsfed/rho" in last and last["bmsfed/selected_unimodal"] + last["bmsfed/selected_multimodal"] == 3
    assert tech.weak_modality in data.modality_names
    protos = tech.global_prototypes
    assert set(protos) == set(data.modality_names)
    assert all(p.shape == (data.num_classes, 16) for p in protos.values())
    # The ME loss actually ran: plans carry prototypes, so the plan's loss weight is set.
    plan = tech.configure(fed.context(5), 0, TrainPlan())
    assert plan.loss_weights["bmsfed/me"] == 0.5
    assert all(f"bmsfed/prototypes/{m}" in plan.extra for m in data.modality_names)


class AllWeak(BMSFed):
    """Puts every selected client into S_I (to check what aggregation does with the strong encoder)."""

    def select_clients(self, ctx: RoundContext, candidates: np.ndarray) -> np.ndarray:
        chosen = super().select_clients(ctx, candidates)
        if self.weak_modality is not None:
            self._assignment = {int(c): "I" for c in chosen}
        return chosen


def test_strong_encoder_is_bit_identical_when_every_pick_is_in_s_i() -> None:
    data = _data()
    tech = AllWeak(clients_per_round=3, me_weight=0.5)
    fed = _fed(data, tech)
    fed.run(1, progress=False)
    weak = tech.weak_modality
    assert weak is not None
    strong = next(m for m in data.modality_names if m != weak)
    before = copy.deepcopy(fed.global_arrays)
    fed.run(2, progress=False)
    assert set(tech.assignment.values()) == {"I"}
    cid = next(iter(tech.assignment))
    plan = tech.configure(fed.context(2), cid, TrainPlan())
    assert plan.train == (f"encoder.{weak}", "fusion", "head")
    assert [c.modalities for c in plan.combinations] == [(weak,)]
    for key, value in before[f"encoder.{strong}"].items():
        assert np.array_equal(fed.global_arrays[f"encoder.{strong}"][key], value)
    changed = any(
        not np.array_equal(fed.global_arrays[f"encoder.{weak}"][k], v)
        for k, v in before[f"encoder.{weak}"].items()
    )
    assert changed


def test_checkpoint_resume_is_exact(tmp_path: Any) -> None:
    data = _data(unimodal=0.25)
    args = dict(chi=1.0, clients_per_round=3, me_weight=0.5)
    full = _fed(data, BMSFed(**args))  # type: ignore[arg-type]
    full.run(4, progress=False)
    part = _fed(data, BMSFed(**args))  # type: ignore[arg-type]
    part.run(2, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2)
    tech = BMSFed(**args)  # type: ignore[arg-type]
    resumed = _fed(data, tech)
    resumed.run(4, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2, resume=True)
    for g, arrays in full.global_arrays.items():
        for k, v in arrays.items():
            assert np.array_equal(resumed.global_arrays[g][k], v)
    a, b = full.strategy.techniques[0].state_dict(), tech.state_dict()
    arrays_a: dict[str, np.ndarray] = {}
    arrays_b: dict[str, np.ndarray] = {}
    tree_a, tree_b = split_arrays(a, "s", arrays_a), split_arrays(b, "s", arrays_b)
    assert json.dumps(tree_a, sort_keys=True) == json.dumps(tree_b, sort_keys=True)
    assert arrays_a.keys() == arrays_b.keys()
    for k, v in arrays_a.items():
        assert np.array_equal(v, arrays_b[k], equal_nan=True)


def _cctx(plan: TrainPlan) -> ClientContext:
    specs = _data().modalities
    return ClientContext(0, 2, plan, {}, specs, 2, torch.Generator())


def test_loss_term_enhances_the_modality_behind_on_the_batch() -> None:
    pa = np.array([[0.0, 0.0], [4.0, 0.0]], dtype=np.float32)
    pb = np.array([[0.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    plan = TrainPlan().with_extra(
        **{
            "bmsfed/prototypes/a": pa,
            "bmsfed/prototypes/b": pb,
            "bmsfed/classes/a": np.array([True, True]),
            "bmsfed/classes/b": np.array([True, True]),
        }
    )
    y = torch.tensor([0, 1])
    za = torch.tensor([[0.0, 0.0], [4.0, 0.0]])  # a sits on its prototypes: well fitted
    zb = torch.tensor([[0.0, 1.5], [0.0, 2.5]])  # b is ambiguous: behind
    present = torch.ones(2, 2, dtype=torch.bool)
    batch = Batch({"a": torch.zeros(2, 8), "b": torch.zeros(2, 8)}, present, y, ("a", "b"))
    out = ModelOutput(torch.zeros(2, 2), {"a": za, "b": zb}, torch.zeros(2, 4), present)
    terms = BMSFed().loss_terms(_cctx(plan), batch, out)
    pbt = torch.from_numpy(pb)
    expected = modal_enhancement_loss(zb, y, pbt, prototype_temperature(pbt))
    assert torch.allclose(terms["bmsfed/me"], expected)
    # Raw distances (the paper's loss) when scale_free is off.
    raw = BMSFed(scale_free=False).loss_terms(_cctx(plan), batch, out)
    assert torch.allclose(raw["bmsfed/me"], modal_enhancement_loss(zb, y, pbt))
    # Only a active (an S_I client of a): a is enhanced.
    only_a = present & torch.tensor([True, False])
    out_a = ModelOutput(torch.zeros(2, 2), {"a": za, "b": torch.zeros(2, 2)}, torch.zeros(2, 4), only_a)
    terms_a = BMSFed().loss_terms(_cctx(plan), batch, out_a)
    pat = torch.from_numpy(pa)
    assert torch.allclose(
        terms_a["bmsfed/me"], modal_enhancement_loss(za, y, pat, prototype_temperature(pat))
    )
    # No prototypes in the plan (round 1): no term.
    assert BMSFed().loss_terms(_cctx(TrainPlan()), batch, out) == {}


def test_count_sketch_is_linear_and_keeps_distances_roughly() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(5000), rng.standard_normal(5000)
    sa, sb = count_sketch(a, 1024, 7), count_sketch(b, 1024, 7)
    assert np.allclose(count_sketch(a - b, 1024, 7), sa - sb)
    assert np.linalg.norm(sa - sb) == pytest.approx(np.linalg.norm(a - b), rel=0.15)
    assert np.array_equal(count_sketch(a, 0, 7), a)  # dim 0: the exact vector


def test_a_string_chi_names_the_field_not_a_float_conversion() -> None:
    # Was: "[[techniques]] #1 (bmsfed): could not convert string to float: 'high'".
    raw = {"data": {"name": "synthetic"}, "techniques": [{"name": "bmsfed", "chi": "high"}]}
    with pytest.raises(ConfigError) as info:
        build_technique(parse_config(raw).techniques[0])
    assert str(info.value) == "[[techniques]] #1 (bmsfed).chi: must be a number >= 1, got 'high'"
    with pytest.raises(ConfigError, match=r"bmsfed: scale_free must be true or false, got 'no'"):
        BMSFed(scale_free="no")  # type: ignore[arg-type]  # was silently bool("no") == True
