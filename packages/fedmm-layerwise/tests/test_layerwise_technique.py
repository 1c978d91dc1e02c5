"""LW-FedMML / Prog-FedMML / E2E: the schedule, what is trained and what crosses, resume, losses."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from fedmm.core import FedAvg, Federation, TrainPlan, datasets
from fedmm.core.arrays import get_arrays
from fedmm.core.client import client_round
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.maths.contrastive import clip_loss
from fedmm.core.models import MultimodalModel, late_fusion
from fedmm.core.protocol import ClientContext, RoundContext
from fedmm.layerwise import LayerWise, StageSchedule, layer_counts

LAYERS = 4


@pytest.fixture
def data() -> FederatedDataset:
    return datasets.load("synthetic", clients=4, partition="iid", num_samples=240, test_samples=80, seed=0)


def _model(data: FederatedDataset) -> MultimodalModel:
    torch.manual_seed(0)
    opts = {"layers": LAYERS, "heads": 2, "tokens": 4, "projection": 16}
    return late_fusion(
        data.modalities,
        data.num_classes,
        embed_dim=16,
        hidden=16,
        encoders={m.name: "transformer" for m in data.modalities},
        encoder_options={m.name: opts for m in data.modalities},
    )


def _fed(data: FederatedDataset, mode: str, **kw: Any) -> Federation:
    strategy = FedAvg([LayerWise(mode=mode, rounds_per_stage=2, **kw)], optimizer="adamw", lr=3e-3)
    return Federation(_model(data), data, strategy, seed=0)


def _active(stage: int) -> set[str]:
    trained = {f"encoder.{m}.{p}" for m in ("a", "b") for p in (str(stage - 1), "norm", "proj")}
    if stage == 1:
        trained |= {"encoder.a.embed", "encoder.b.embed"}
    return trained | {"fusion", "head"}


def test_schedule_stages_and_validation() -> None:
    sched = StageSchedule((3, 3, 3, 3))
    assert [sched.stage_at(r) for r in (1, 3, 4, 12, 13)] == [1, 1, 2, 4, 4]
    assert sched.first_round(3) == 7 and sched.total_rounds == 12
    low_high = StageSchedule((0, 0, 2, 3))
    assert [low_high.stage_at(r) for r in (1, 2, 3, 5, 9)] == [3, 3, 4, 4, 4]
    for bad in ((), (0, 0), (1, -1), (1.5,)):
        with pytest.raises(ConfigError):
            StageSchedule(bad)  # type: ignore[arg-type]


def test_stage_plan_of_each_mode(data: FederatedDataset) -> None:
    groups = list(_model(data).parameter_groups())
    assert layer_counts(groups) == {"a": LAYERS, "b": LAYERS}
    stage, depth, train, keep = LayerWise("lw", rounds_per_stage=2).stage_plan(groups, 5)
    assert stage == 3 and depth == {"a": 3, "b": 3}
    assert set(train) == _active(3)
    assert set(keep) == {f"encoder.{m}.{p}" for m in ("a", "b") for p in ("embed", "0", "1")}
    _, depth, train, keep = LayerWise("prog", rounds_per_stage=2).stage_plan(groups, 5)
    assert set(train) == _active(3) | {f"encoder.{m}.{p}" for m in ("a", "b") for p in ("embed", "0", "1")}
    assert keep == ()
    _, depth, train, _ = LayerWise("e2e").stage_plan(groups, 5)
    assert depth == {} and set(train) == set(groups)


def test_lw_exchanges_only_the_active_block_and_keeps_the_frozen_prefix(data: FederatedDataset) -> None:
    fed = _fed(data, "lw")
    snapshots = []
    for _ in range(8):
        fed.run(fed.round + 1, progress=False)
        snapshots.append(copy.deepcopy(fed.global_arrays))
    stages = [r["layerwise/stage"] for r in fed.history.rounds]
    assert stages == [1, 1, 2, 2, 3, 3, 4, 4]  # the stage advances at the scheduled rounds
    for rec in fed.history.ledger.records:
        stage = (rec.round + 1) // 2
        assert set(rec.groups_up) == _active(stage)  # the ledger's group list: only the active block
        frozen_new = {f"encoder.{m}.{stage - 2}" for m in ("a", "b")} if stage > 1 else set()
        first_of_stage = rec.round % 2 == 1
        # The layer frozen at this stage crosses once (first round of the stage), then is kept.
        if stage > 1:
            assert (frozen_new <= set(rec.groups_down)) == first_of_stage
        assert not {g for g in rec.groups_down if g.endswith(f".{LAYERS - 1}")} or stage == LAYERS
    # Frozen layers do not change: layer 0 and the embeddings after stage 1 stay bit-identical.
    for g in ("encoder.a.0", "encoder.b.0", "encoder.a.embed"):
        for later in snapshots[2:]:
            assert all(np.array_equal(snapshots[1][g][k], later[g][k]) for k in later[g])
    # ...and layers not grown yet are untouched until their stage.
    init = get_arrays(_model(data))
    assert all(
        np.array_equal(init["encoder.a.3"][k], snapshots[5]["encoder.a.3"][k]) for k in init["encoder.a.3"]
    )


def test_frozen_layers_get_no_gradient(data: FederatedDataset) -> None:
    model = _model(data)
    tech = LayerWise("lw", rounds_per_stage=2)
    ctx = Federation(model, data, FedAvg([tech])).context(3)  # stage 2
    plan = tech.configure(ctx, 0, TrainPlan(optimizer="adamw", lr=1e-3))
    client_round(
        model,
        get_arrays(model),
        plan,
        data.client(0),
        {},
        [tech],
        round_=3,
        seed=0,
        modalities=data.modalities,
        num_classes=data.num_classes,
    )
    enc = model.encoders["a"]
    assert all(p.grad is None for p in enc.layers[0].parameters())
    assert all(p.grad is None for p in enc.embed.parameters())
    assert all(p.grad is not None for p in enc.layers[1].parameters())
    assert enc.depth == 2


def test_prog_exchanges_every_grown_layer(data: FederatedDataset) -> None:
    fed = _fed(data, "prog")
    fed.run(4, progress=False)
    for rec in fed.history.ledger.records:
        stage = (rec.round + 1) // 2
        grown = {f"encoder.{m}.{i}" for m in ("a", "b") for i in range(stage)}
        assert set(rec.groups_up) == _active(1) | grown


def test_lw_costs_less_than_prog_and_e2e_at_the_last_stage(data: FederatedDataset) -> None:
    last = {}
    for mode in ("lw", "prog", "e2e"):
        fed = _fed(data, mode)
        fed.run(8, progress=False)
        last[mode] = next(r for r in fed.history.ledger.records if r.round == 8)
    assert last["lw"].flops < last["prog"].flops
    assert last["lw"].peak_bytes < last["prog"].peak_bytes
    assert last["lw"].bytes_up < last["prog"].bytes_up == last["e2e"].bytes_up  # prog = e2e at full depth


def test_resume_in_the_middle_of_a_stage_continues_it(tmp_path: Any, data: FederatedDataset) -> None:
    full = _fed(data, "lw")
    full.run(6, progress=False)
    part = _fed(data, "lw")
    part.run(3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)  # round 3 = stage 2, mid-stage
    resumed = _fed(data, "lw")
    history = resumed.run(6, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert [r["layerwise/stage"] for r in history.rounds] == [1, 1, 2, 2, 3, 3]
    for g, arrays in full.global_arrays.items():
        assert all(np.array_equal(arrays[k], resumed.global_arrays[g][k]) for k in arrays)


def test_contrastive_term_is_the_clip_loss(data: FederatedDataset) -> None:
    model = _model(data)
    tech = LayerWise("lw", rounds_per_stage=2, contrastive_weight=0.5, temperature=0.1)
    ctx: RoundContext = Federation(model, data, FedAvg([tech])).context(1)
    plan = tech.configure(ctx, 0, TrainPlan())
    assert plan.loss_weights["layerwise/contrastive"] == 0.5
    batch = data.client(0).batch(np.arange(8))
    out = model(batch)
    cctx = ClientContext(0, 1, plan, {}, data.modalities, data.num_classes, torch.Generator())
    term = tech.loss_terms(cctx, batch, out)["layerwise/contrastive"]
    assert term.item() == pytest.approx(clip_loss(out.embeddings["a"], out.embeddings["b"], 0.1).item())
    self_sup = LayerWise("lw", contrastive_weight=1.0, supervised=False).configure(ctx, 0, TrainPlan())
    assert self_sup.loss_weights["ce"] == 0.0


def test_bad_parameters_are_clear_errors(data: FederatedDataset) -> None:
    with pytest.raises(ConfigError, match="mode must be one of"):
        LayerWise(mode="deep")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rounds_per_stage must be an integer >= 1, got 0"):
        LayerWise(rounds_per_stage=0)
    with pytest.raises(ConfigError, match="layers_per_stage"):
        LayerWise(layers_per_stage=0)
    with pytest.raises(ConfigError, match="no loss"):
        LayerWise(supervised=False)
    with pytest.raises(ConfigError, match="cannot grow"):
        LayerWise(rounds_per_stage=[5, 5]).schedule(list(_model(data).parameter_groups()))
    plain = late_fusion(data.modalities, data.num_classes)
    # Refused when the federation is built, not at round 1.
    with pytest.raises(ConfigError, match="'layerwise' cannot run on this model: it needs layered encoders"):
        Federation(plain, data, FedAvg([LayerWise()]))
    Federation(plain, data, FedAvg([LayerWise(mode="e2e")]))  # end-to-end trains any model whole


def _saved_bytes_per_step(data: FederatedDataset, mode: str, round_: int) -> float:
    """Bytes autograd saves for backward in one client round, per training step."""
    model = _model(data)
    tech = LayerWise(mode=mode, rounds_per_stage=2)  # type: ignore[arg-type]
    plan = tech.configure(Federation(model, data, FedAvg([tech])).context(round_), 0, TrainPlan())
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = client_round(
            model,
            get_arrays(model),
            plan,
            data.client(0),
            {},
            [tech],
            round_=round_,
            seed=0,
            modalities=data.modalities,
            num_classes=data.num_classes,
        )
    return saved[0] / result.cost.steps


def test_the_frozen_prefix_saves_no_activations_for_backward(data: FederatedDataset) -> None:
    lw_first, lw_last = _saved_bytes_per_step(data, "lw", 1), _saved_bytes_per_step(data, "lw", 7)
    prog_last, e2e = _saved_bytes_per_step(data, "prog", 7), _saved_bytes_per_step(data, "e2e", 7)
    # At the last stage LW runs 4 layers but keeps activations of one, like at stage 1.
    assert lw_last <= 1.1 * lw_first
    assert lw_last < e2e / 2.5
    assert prog_last == e2e  # Prog at full depth trains everything


def test_built_from_toml_and_the_docs_example() -> None:
    import json
    from pathlib import Path

    from fedmm.core.config import build_technique, load_config, parse_config

    raw = {
        "data": {"name": "synthetic"},
        "techniques": [{"name": "layerwise", "mode": "prog", "rounds_per_stage": [0, 2, 3]}],
    }
    tech = build_technique(parse_config(raw).techniques[0])
    assert isinstance(tech, LayerWise) and tech.args.mode == "prog"
    assert tech.args.rounds_per_stage == (0, 2, 3)
    cfg = tech.config()
    json.dumps(cfg)
    assert LayerWise(**cfg).config() == cfg
    root = Path(__file__).resolve().parents[3]
    example = load_config(root / "docs" / "examples" / "layerwise.toml")
    built = build_technique(example.techniques[0])
    assert isinstance(built, LayerWise) and built.args.mode == "lw"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rounds_per_stage": "10"}, "(layerwise).rounds_per_stage: must be an integer >= 1 or a list"),
        ({"rounds_per_stage": [0, 0]}, "(layerwise).rounds_per_stage: must give some stage rounds"),
        ({"layers_per_stage": {"a": 0}}, "(layerwise).layers_per_stage.a: must be an integer >= 1, got 0"),
        ({"contrastive_pair": ["a"]}, "(layerwise).contrastive_pair: names two different modalities"),
        ({"contrastive_pair": "ab"}, "(layerwise).contrastive_pair: names two different modalities"),
        ({"temperature": "high"}, "(layerwise).temperature: must be a finite number > 0, got 'high'"),
        ({"supervised": "false"}, "(layerwise).supervised: must be true or false, got 'false'"),
    ],
)
def test_layerwise_arguments_are_checked_when_built_and_named(
    arguments: dict[str, Any], message: str
) -> None:
    # Were: TypeError from math.isfinite('high'), a string taken as a list of stages, bool('false').
    from fedmm.core.config import build_technique, parse_config

    cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "layerwise", **arguments}]})
    with pytest.raises(ConfigError) as info:
        build_technique(cfg.techniques[0])
    assert message in str(info.value)
