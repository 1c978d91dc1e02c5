"""The device option: resolution, clear errors, batches and models that follow the weights."""

from __future__ import annotations

import pytest
import torch

from fedmm.core import ConfigError, FedAvg, Federation, datasets, models
from fedmm.core.config import parse_config
from fedmm.core.devices import module_device, resolve_device
from fedmm.core.measure import measure_step

NO_CUDA = not torch.cuda.is_available()


def test_auto_and_cpu_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device(None) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", "cuda0", ""])
def test_an_unknown_device_names_the_choices(spec: str) -> None:
    with pytest.raises(ConfigError, match=r'"auto", "cpu", "cuda", "cuda:N"'):
        resolve_device(spec)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_config_error_that_says_what_to_use(spec: str) -> None:
    with pytest.raises(ConfigError, match=r'needs a CUDA GPU.*use device = "cpu" or "auto"'):
        resolve_device(spec)
    data = datasets.load("synthetic", clients=2)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        Federation(models.late_fusion(data.modalities, data.num_classes), data, FedAvg(), device=spec)


def test_the_config_checks_the_device_spelling() -> None:
    base = {"data": {"name": "synthetic", "clients": 2}}
    assert parse_config({**base, "run": {"device": "cuda:1"}}).run.device == "cuda:1"
    assert parse_config(base).run.device == "auto"
    with pytest.raises(ConfigError, match="device"):
        parse_config({**base, "run": {"device": "gpu"}})


def test_batch_to_its_own_device_is_itself_and_elsewhere_a_copy() -> None:
    data = datasets.load("synthetic", clients=2)
    batch = data.client(0).batch()
    assert batch.to("cpu") is batch
    moved = batch.to("meta")
    assert moved.device == torch.device("meta")
    assert all(t.device.type == "meta" for t in moved.features.values())
    assert moved.present.device.type == "meta" and moved.modalities == batch.modalities


def test_a_federation_moves_its_model_and_cpu_equals_the_default_on_a_cpu_machine() -> None:
    data = datasets.load("synthetic", clients=4)

    def run(**kwargs: object) -> list[float]:
        torch.manual_seed(0)
        model = models.late_fusion(data.modalities, data.num_classes)
        fed = Federation(model, data, FedAvg(clients_per_round=2), **kwargs)  # type: ignore[arg-type]
        assert module_device(fed.model) == fed.device
        return [r["accuracy"] for r in fed.run(2, progress=False).rounds]

    if NO_CUDA:
        assert run(device="cpu") == run()


@pytest.mark.parametrize("build", ["concat", "attention", "har"])
def test_core_models_allocate_where_their_inputs_are(build: str) -> None:
    # Under "meta" as the default device, a tensor made without a device is a meta tensor and
    # the forward fails when it meets the real ones; made on the inputs' device, nothing changes.
    data = datasets.load("synthetic", clients=2, incomplete_fraction=0.5)
    if build == "har":
        data = datasets.load("hapt", clients=2)
        model = models.fedmultimodal_har(data.modalities, data.num_classes, hidden=8, filters=4)
    else:
        model = models.late_fusion(data.modalities, data.num_classes, fusion=build)
    model.eval()
    batch = data.client(0).batch()
    with torch.no_grad():
        plain = model(batch).logits
        one = model(batch, (data.modalities[0].name,)).logits
        with torch.device("meta"):
            meta = model(batch).logits
            meta_one = model(batch, (data.modalities[0].name,)).logits
    assert meta.device.type == "cpu"
    torch.testing.assert_close(meta, plain)
    torch.testing.assert_close(meta_one, one)


def test_a_cpu_step_has_no_allocator_figures() -> None:
    lin = torch.nn.Linear(8, 4)
    with measure_step() as m:
        lin(torch.ones(2, 8)).sum().backward()
    assert m.allocator_peak_bytes_by_device == {}
    assert m.peak_bytes == m.peak_bytes_by_device["cpu"]


def test_the_environment_chooses_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMM_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("FEDMM_DEVICE", "gpu")
    with pytest.raises(ConfigError, match="environment variable FEDMM_DEVICE: unknown device 'gpu'"):
        resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit device is not overridden


# -- on a GPU (tools/device_check.py sets FEDMM_TEST_DEVICE=cuda); skipped on a CPU machine -------
GPU = pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU (run tools/device_check.py on one)")


@GPU
def test_a_run_on_the_gpu_matches_the_cpu_run() -> None:
    data = datasets.load("synthetic", clients=4)

    def run(device: str) -> list[dict[str, float]]:
        torch.manual_seed(0)
        model = models.late_fusion(data.modalities, data.num_classes, fusion="attention")
        fed = Federation(model, data, FedAvg(clients_per_round=2), device=device)
        history = fed.run(3, progress=False)
        assert all(r["dropped"] == 0 for r in history.rounds)
        return history.rounds

    for a, b in zip(run("cpu"), run("cuda"), strict=True):
        for key in ("accuracy", "loss", "train_loss"):
            assert abs(a[key] - b[key]) <= 1e-3, (a["round"], key, a[key], b[key])


@GPU
def test_a_gpu_step_takes_its_peak_from_the_allocator_and_the_tracker_agrees() -> None:
    lin = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)).cuda()
    x = torch.randn(512, 256, device="cuda")
    with measure_step() as m:
        lin(x).sum().backward()
    allocator = m.allocator_peak_bytes_by_device["cuda:0"]
    tracked = m.peak_bytes_by_device["cuda:0"]
    # The allocator rounds blocks up and sees kernel workspaces the tracker cannot.
    assert tracked <= allocator <= 1.5 * tracked + 8 * 2**20, (tracked, allocator)
    assert m.peak_bytes == allocator
