"""FedMFS end to end on small synthetic federations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmm.core.arrays import get_arrays
from fedmm.core.config import parse_config
from fedmm.core.data.registry import federate
from fedmm.core.data.synthetic import make_synthetic
from fedmm.core.data.types import FederatedDataset
from fedmm.core.errors import ConfigError
from fedmm.core.federation import Federation
from fedmm.core.protocol import FedAvg
from fedmm.core.runner import build_federation
from fedmm.select.fedmfs import FedMFS, modality_ensemble, personalised_accuracy
from fedmm.select.fedmfs.model import ModalityEnsembleModel


def _data(unimodal_fraction: float = 0.0) -> FederatedDataset:
    # "small" is strongly informative and tiny, "large" is pure noise and large.
    central = make_synthetic(600, num_classes=4, modalities=[("small", 4, 1.0), ("large", 96, 0.0)], seed=1)
    return federate(central, clients=4, unimodal_fraction=unimodal_fraction, seed=0)


def _run(data: FederatedDataset, technique: FedMFS, rounds: int = 2) -> Federation:
    torch.manual_seed(0)
    model = modality_ensemble(data.modalities, data.num_classes, encoder_options={"large": {"hidden": 128}})
    fed = Federation(model, data, FedAvg([technique], lr=0.1), seed=0)
    fed.run(rounds, progress=False)
    return fed


def test_select_fedmfs_model_groups_and_forward() -> None:
    data = _data()
    model = modality_ensemble(data.modalities, data.num_classes)
    assert set(model.parameter_groups()) == {"encoder.small", "encoder.large"}
    batch = data.client(0).batch()
    out = model(batch, ("small",))
    assert out.logits.shape == (len(batch), 4)
    assert torch.all(out.embeddings["large"] == 0)  # not active: not run
    np.testing.assert_allclose(out.logits.exp().sum(1).detach().numpy(), 1.0, rtol=1e-5)


def test_select_fedmfs_uploads_informative_small_modality() -> None:
    data = _data()
    torch.manual_seed(0)
    init = get_arrays(
        modality_ensemble(data.modalities, data.num_classes, encoder_options={"large": {"hidden": 128}})
    )
    fed = _run(data, FedMFS(gamma=1, alpha_s=1.0, alpha_c=0.0))  # Shapley alone decides
    last = fed.history.rounds[-1]
    assert last["fedmfs/uploads/small"] == 4 and last["fedmfs/uploads/large"] == 0
    assert last["fedmfs/shapley/small"] > last["fedmfs/shapley/large"]
    # Nobody uploaded the noise model: the server keeps it bit-exactly.
    for k, v in fed.global_arrays["encoder.large"].items():
        np.testing.assert_array_equal(v, init["encoder.large"][k])
    everything = _run(data, FedMFS(gamma=2))
    # Only the small model went up: a fraction of what uploading both costs.
    counts = fed.model.parameter_counts()  # type: ignore[operator]
    ratio = everything.history.ledger.totals()["bytes_up"] / fed.history.ledger.totals()["bytes_up"]
    assert ratio == pytest.approx((counts["small"] + counts["large"]) / counts["small"], rel=0.01)
    acc = personalised_accuracy(fed.model, data)
    assert 0.5 < acc <= 1.0


def test_select_fedmfs_exact_shapley_and_missing_modalities() -> None:
    data = _data(unimodal_fraction=0.5)
    fed = _run(data, FedMFS(gamma=2, shapley="exact"), rounds=1)
    assert data.client_modalities is not None
    for cid, report in fed.reports.items():
        owned = data.client_modalities[cid]
        sent = np.asarray(report["fedmfs/upload"], dtype=bool)
        assert not np.any(sent & ~owned)
        assert sent.sum() == min(2, owned.sum())


def test_select_fedmfs_gamma_above_modalities_and_toml() -> None:
    data = _data()
    with pytest.raises(ConfigError, match="gamma = 3 exceeds the number of modalities"):
        _run(data, FedMFS(gamma=3), rounds=1)
    # From TOML: by default the technique builds the paper's per-modality models (one group each);
    # with model = "late_fusion" core's model is used and fusion/head go up with the chosen encoder.
    for kind, groups in (("ensemble", {"encoder.a", "encoder.b"}), ("late_fusion", None)):
        cfg = parse_config(
            {
                "run": {"rounds": 1},
                "data": {
                    "name": "synthetic",
                    "clients": 3,
                    "options": {"num_samples": 300, "num_classes": 3},
                },
                "techniques": [{"name": "fedmfs", "gamma": 1, "model": kind}],
            }
        )
        fed = build_federation(cfg)
        if groups is not None:
            assert isinstance(fed.model, ModalityEnsembleModel) and set(fed.groups) == groups
        else:
            assert {"fusion", "head"} <= set(fed.groups)
        fed.run(1, progress=False)
        last = fed.history.rounds[-1]
        assert last["fedmfs/uploads/a"] + last["fedmfs/uploads/b"] == 3


def test_select_fedmfs_bench_draws_paper_style_curves(tmp_path: Path) -> None:
    from fedmm.core.experiment import SeedRun
    from fedmm.select.fedmfs.bench import ARMS, Setting, _setting

    central = make_synthetic(
        300, num_classes=3, modalities=[("a", 4, 1.0), ("b", 16, 0.3), ("c", 8, 0.0)], seed=0
    )
    setting = Setting("tiny", "", "synthetic", "iid", 3, "mlp", {"hidden": 8}, (2, 2, 2), 1, 3)
    run = SeedRun(0, "smoke", plots_dir=tmp_path)
    out = _setting(run, setting, central)
    assert (tmp_path / "fedmfs_tiny_seed0.png").stat().st_size > 0
    # Every arm at every γ < M, plus uploading everything, recorded with the harness in one group.
    assert set(run.arms) == {"all"} | {f"{a}_gamma{g}" for a in ARMS for g in (1, 2)}
    assert out["bytes_up_all"] > out["bytes_up_fedmfs_gamma2"] > out["bytes_up_fedmfs_gamma1"] > 0
    # One family, one width: sizes differ only by input size (a: 4, c: 8, b: 16 inputs).
    sizes = out["params"]
    assert sizes["a"] < sizes["c"] < sizes["b"]
    assert out["max_upload_reduction_gamma1"] == sum(sizes.values()) / sizes["a"]
    # Size alone uploads the smallest model everywhere; three distinct sizes, so no ties.
    assert out["uploads_size_only_gamma1_a"] == 2 * 3 and out["uploads_size_only_gamma1_b"] == 0
