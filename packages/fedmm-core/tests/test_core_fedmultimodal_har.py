"""FedMultimodal's UCI-HAR protocol pieces: the HAR model, UAR, test-time missing modalities,
gradient clipping, the per-subject dev split, per-window normalisation, body acceleration, and
the ``fedmultimodal-har`` benchmark on a small folder in the real UCI HAR layout."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmm.core.arrays import get_arrays
from fedmm.core.data.hapt import body_acceleration
from fedmm.core.data.registry import federate
from fedmm.core.data.types import CentralDataset, ModalitySpec, SampleSet
from fedmm.core.data.windows import window_normalize
from fedmm.core.errors import ConfigError
from fedmm.core.evaluate import drop_modalities, evaluate, missing_modality_curve, unweighted_average_recall
from fedmm.core.federation import Federation
from fedmm.core.models.har import TokenAttentionFusion, fedmultimodal_har
from fedmm.core.protocol import FedAvg

SPECS = (ModalitySpec("acc", (128, 3), "sequence"), ModalitySpec("gyro", (128, 3), "sequence"))


def _samples(n: int, seed: int = 0, present: np.ndarray | None = None) -> SampleSet:
    rng = np.random.default_rng(seed)
    feats = {m.name: rng.standard_normal((n, 128, 3)).astype(np.float32) for m in SPECS}
    return SampleSet(SPECS, feats, rng.integers(0, 6, n), present=present)


def _central(per_subject: int = 60, subjects: int = 3, seed: int = 0) -> CentralDataset:
    """Windows whose class shifts the signal's mean: learnable, with natural subject groups."""
    rng = np.random.default_rng(seed)
    n = per_subject * subjects
    labels = np.tile(np.arange(6), n // 6 + 1)[:n]
    feats = {
        m.name: (rng.standard_normal((n, 128, 3)) + labels[:, None, None]).astype(np.float32) for m in SPECS
    }
    train = SampleSet(SPECS, feats, labels)
    test = SampleSet(SPECS, {k: v[:30] for k, v in feats.items()}, labels[:30])
    return CentralDataset(
        "toy-har", SPECS, 6, train, test, train_groups=np.repeat(np.arange(subjects), per_subject)
    )


# -- the model -------------------------------------------------------------------------------------
def test_the_har_model_has_fedmultimodals_parameter_count_and_groups() -> None:
    model = fedmultimodal_har(SPECS, 6)
    assert sum(p.numel() for p in model.parameters()) == 420_684
    assert sorted(model.parameter_groups()) == ["encoder.acc", "encoder.gyro", "fusion", "head"]
    with pytest.raises(ConfigError, match="sequence modalities"):
        fedmultimodal_har((ModalitySpec("image", (1, 8, 8), "image"),), 6)


def test_a_missing_modality_is_masked_out_of_the_attention() -> None:
    torch.manual_seed(0)
    model = fedmultimodal_har(SPECS, 6).eval()
    present = np.array([[True, False], [True, True], [False, True]])
    a, b = _samples(3, 0, present), _samples(3, 1, present)
    # Same acc where acc is present, same gyro where gyro is present; the rest differs.
    feats = {
        "acc": np.where(present[:, :1, None], a.features["acc"], b.features["acc"]),
        "gyro": np.where(present[:, 1:, None], a.features["gyro"], b.features["gyro"]),
    }
    c = SampleSet(SPECS, feats, a.labels, present=present)
    with torch.no_grad():
        la = model(a.batch(np.arange(3))).logits
        lc = model(c.batch(np.arange(3))).logits
    assert torch.allclose(la[[0, 2]], lc[[0, 2]], atol=1e-6)  # what is absent changes nothing


def test_token_attention_pools_each_head_with_weights_summing_to_one() -> None:
    torch.manual_seed(0)
    fusion = TokenAttentionFusion([(2, 4), (3, 4)], heads=2, attention_dim=8)
    emb = [torch.randn(1, 8), torch.randn(1, 12)]
    present = torch.tensor([[True, True]])
    out = fusion(emb, present)
    h = torch.cat([emb[0].view(1, 2, 4), emb[1].view(1, 3, 4)], dim=1)
    w = torch.softmax(fusion.score(h), dim=1)  # by hand: softmax over all 5 tokens per head
    assert torch.allclose(out, torch.einsum("bth,btd->bhd", w, h).flatten(1), atol=1e-6)
    # With the second modality absent, only its 2 first tokens count.
    only_first = fusion(emb, torch.tensor([[True, False]]))
    w1 = torch.softmax(fusion.score(h[:, :2]), dim=1)
    assert torch.allclose(only_first, torch.einsum("bth,btd->bhd", w1, h[:, :2]).flatten(1), atol=1e-6)


# -- metrics ----------------------------------------------------------------------------------------
def test_uar_is_the_mean_recall_over_present_classes() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 2])
    assert unweighted_average_recall(y, p, 4) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)  # class 3 absent


def test_missing_modality_curve_keeps_one_modality_and_matches_evaluate_at_zero() -> None:
    rng = np.random.default_rng(0)
    present = np.ones((2000, 2), dtype=bool)
    dropped = drop_modalities(present, 0.5, rng)
    assert dropped.any(axis=1).all()
    # Each entry goes with p = 0.5; a sample that lost both gets one back: P(missing) = 0.25 + 0.
    assert abs((~dropped).mean() - 0.375) < 0.03
    with pytest.raises(ValueError, match="missing rate"):
        drop_modalities(present, 1.0, rng)

    torch.manual_seed(0)
    model = fedmultimodal_har(SPECS, 6)
    samples = _samples(40)
    curve = missing_modality_curve(model, samples, 6, (0.0, 0.5, 0.9), seed=3)
    assert list(curve) == [0.0, 0.5, 0.9]
    full = evaluate(model, samples, 6, per_modality=False)
    assert curve[0.0] == {k: full[k] for k in ("accuracy", "f1_macro", "uar")}
    assert curve == missing_modality_curve(model, samples, 6, (0.0, 0.5, 0.9), seed=3)  # reproducible


# -- training pieces -------------------------------------------------------------------------------
def test_gradients_are_clipped_to_max_grad_norm() -> None:
    data = federate(_central(), clients=2, partition="iid", seed=0)
    torch.manual_seed(0)
    model = fedmultimodal_har(data.modalities, data.num_classes)
    start = get_arrays(model)

    def moved(max_grad_norm: float | None) -> float:
        strategy = FedAvg(
            clients_per_round=1, batch_size=data.client_sizes().max(), lr=1.0, max_grad_norm=max_grad_norm
        )
        fed = Federation(model, data, strategy, seed=0, eval_every=0)
        fed.global_arrays = {g: {k: v.copy() for k, v in a.items()} for g, a in start.items()}
        fed.run(1, progress=False)
        sq = sum(
            float(np.sum((fed.global_arrays[g][k] - start[g][k]) ** 2))
            for g in start
            for k in start[g]
            if np.issubdtype(start[g][k].dtype, np.floating)
        )
        return sq**0.5

    # One full-batch SGD step of lr 1 moves the weights by exactly the (clipped) gradient's norm.
    assert moved(1e-3) == pytest.approx(1e-3, rel=1e-3)
    assert moved(None) > 1e-2
    with pytest.raises(ConfigError, match="max_grad_norm"):
        FedAvg(max_grad_norm=0.0)


def test_per_group_validation_takes_the_fraction_of_each_subject() -> None:
    central = _central(per_subject=50)
    data = federate(
        central, clients=3, partition="natural", validation_fraction=0.2, validation_split="per_group"
    )
    assert data.validation is not None and len(data.validation) == 3 * 10
    assert len(data.train) == 3 * 40
    pooled = federate(central, clients=3, partition="natural", validation_fraction=0.2)
    assert pooled.validation is not None and len(pooled.validation) == 30
    with pytest.raises(ConfigError, match="validation_split"):
        federate(central, clients=3, partition="natural", validation_fraction=0.2, validation_split="subject")  # type: ignore[arg-type]
    no_groups = CentralDataset("g", SPECS, 6, central.train, central.test)
    with pytest.raises(ConfigError, match="natural groups"):
        federate(no_groups, clients=3, validation_fraction=0.2, validation_split="per_group")


def test_federation_scores_the_validation_split_when_asked() -> None:
    data = federate(_central(), clients=3, partition="natural", validation_fraction=0.2, seed=0)
    model = fedmultimodal_har(data.modalities, data.num_classes)
    fed = Federation(model, data, FedAvg(), eval_validation=True, eval_per_modality=False)
    metrics = fed.run(1, progress=False).rounds[-1]
    assert {"val_f1_macro", "val_accuracy", "val_uar", "f1_macro", "uar"} <= set(metrics)
    assert "accuracy/acc" not in metrics
    no_val = federate(_central(), clients=3, partition="natural", seed=0)
    with pytest.raises(ConfigError, match="validation split"):
        Federation(model, no_val, FedAvg(), eval_validation=True)


# -- preprocessing ---------------------------------------------------------------------------------
def test_window_normalize_zscores_each_window_and_channel() -> None:
    x = np.random.default_rng(0).normal(5.0, 3.0, (4, 128, 3)).astype(np.float32)
    z = window_normalize(x)
    assert np.allclose(z.mean(axis=1), 0, atol=1e-5) and np.allclose(z.std(axis=1), 1, atol=1e-3)
    flat = window_normalize(np.ones((1, 128, 3), np.float32))
    assert np.all(np.isfinite(flat)) and np.allclose(flat, 0)  # a constant channel stays finite


def test_body_acceleration_removes_gravity_and_keeps_motion() -> None:
    t = np.arange(2000) / 50.0
    motion = 0.5 * np.sin(2 * np.pi * 2.0 * t)  # 2 Hz: walking
    signals = np.zeros((2000, 6), np.float32)
    signals[:, 0] = 1.0 + motion  # gravity on x plus motion
    signals[:, 3] = motion  # a gyroscope channel: left alone
    out = body_acceleration(signals, np.array([0, 2000]))
    mid = slice(200, 1800)  # away from the filter's edges
    assert np.abs(out[mid, 0] - motion[mid]).max() < 0.05
    assert np.array_equal(out[:, 3], signals[:, 3])


# -- the benchmark on a UCI HAR Dataset folder -----------------------------------------------------
def _write_uci_har(root: Path, subjects: int = 3, per_subject: int = 40) -> Path:
    ds = root / "UCI HAR Dataset"
    for split, subs in (("train", range(1, subjects + 1)), ("test", (2 * subjects + 1,))):
        sig = ds / split / "Inertial Signals"
        sig.mkdir(parents=True)
        rows = per_subject * len(subs)
        labels = np.tile(np.arange(1, 7), rows // 6 + 1)[:rows]
        (ds / split / f"y_{split}.txt").write_text("".join(f"{v}\n" for v in labels))
        (ds / split / f"subject_{split}.txt").write_text(
            "".join(f"{s}\n" for s in np.repeat(list(subs), per_subject))
        )
        for kind in ("body_acc", "body_gyro", "total_acc"):
            for axis in "xyz":
                rng = np.random.default_rng(zlib.crc32(f"{split}/{kind}_{axis}".encode()))
                m = rng.standard_normal((rows, 128)) + labels[:, None]
                (sig / f"{kind}_{axis}_{split}.txt").write_text(
                    "\n".join(" ".join(f"{v:.7e}" for v in row) for row in m) + "\n"
                )
    return ds


@pytest.mark.integration  # nine arms of the benchmark, two rounds each
def test_the_benchmark_runs_on_a_uci_har_folder_and_says_which_data(tmp_path: Path) -> None:
    from fedmm.core.bench.fedmultimodal_har import FEDMULTIMODAL_HAR, PUBLISHED

    folder = _write_uci_har(tmp_path)
    out = FEDMULTIMODAL_HAR(mode="smoke", seeds=[0], data_path=folder)
    assert out["data"] == "uci-har" and out["data_path"] == str(folder.resolve())
    for key in PUBLISHED:
        assert 0.0 <= out[key] <= 1.0 and out[f"published_{key}"] == PUBLISHED[key]
    assert out["target_met"] in (True, False)
    assert {f"f1_fedopt_a01_missing{p}" for p in (10, 30, 50)} <= set(out)
    assert {f"f1_fedopt_a01_testmissing{p}" for p in range(0, 100, 10)} <= set(out)
    assert out["clients_a5"] == 15.0  # 3 subjects x 5 sub-clients
    assert out["unequal_budget"] == []  # the algorithms of one setting share data and steps
    json.dumps(out)


def test_data_path_is_refused_where_a_benchmark_reads_none_and_must_be_a_folder(tmp_path: Path) -> None:
    from fedmm.core.bench.fedmultimodal_har import FEDMULTIMODAL_HAR
    from fedmm.core.experiment import Benchmark

    with pytest.raises(ConfigError, match="reads no data folder"):
        Benchmark("toy", lambda run: {"x": 1.0})(mode="smoke", data_path=tmp_path)
    with pytest.raises(ConfigError, match="not a folder"):
        FEDMULTIMODAL_HAR(mode="smoke", data_path=tmp_path / "nothing")
