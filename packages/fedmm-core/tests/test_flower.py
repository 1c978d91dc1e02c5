"""The Flower engine: records codec, and the same run on Flower's simulation engine as in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flwr.app import RecordDict

from fedmm.core import FedAvg, Federation, Technique, datasets, models
from fedmm.core.cli import main as cli_main
from fedmm.core.errors import FedmmError, UpdateError
from fedmm.core.flower.codec import (
    arrays_to_record,
    content_bytes,
    pack,
    record_to_arrays,
    unpack,
)

# Ray actors and Flower's simulation engine: the integration tier (`pytest -m integration`).
pytestmark = pytest.mark.integration

METRICS = ("accuracy", "loss", "train_loss")


# -- codec ------------------------------------------------------------------------------------
def test_grouped_arrays_round_trip_through_an_array_record() -> None:
    arrays = {
        "encoder.image": {"encoder.image.w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "head": {"head.b": np.array([1.5], dtype=np.float64), "head.n": np.array(3, dtype=np.int64)},
    }
    back = record_to_arrays(arrays_to_record(arrays))
    assert list(back) == list(arrays)
    for g in arrays:
        for k, v in arrays[g].items():
            assert back[g][k].dtype == v.dtype and np.array_equal(back[g][k], v)


def test_nested_reports_keep_arrays_and_non_string_keys() -> None:
    report = {
        "prototypes": {"image": np.ones((2, 3), np.float32)},
        "shapley": {("audio", "image"): 0.25, ("image",): 0.75},
        "counts": {3: 1, 7: 2},
        "ratio": np.float32(0.5),
        "names": ["a", "b"],
        "none": None,
    }
    content = RecordDict()
    pack(content, "r", report)
    back = unpack(content, "r")
    assert np.array_equal(back["prototypes"]["image"], report["prototypes"]["image"])
    assert back["shapley"] == {("audio", "image"): 0.25, ("image",): 0.75}
    assert back["counts"] == {3: 1, 7: 2}
    assert back["ratio"] == 0.5 and back["names"] == ["a", "b"] and back["none"] is None


def test_unpacking_refuses_missing_or_malformed_records() -> None:
    with pytest.raises(UpdateError, match="lacks"):
        unpack(RecordDict(), "fedmm.report")
    from flwr.app import ArrayRecord, ConfigRecord

    content = RecordDict({"x": ConfigRecord({"json": "{not json"})})
    with pytest.raises(UpdateError, match="malformed"):
        unpack(content, "x")
    with pytest.raises(UpdateError, match="not named"):
        record_to_arrays(ArrayRecord({"no-separator": arrays_to_record({"g": {"k": np.zeros(1)}})["g|k"]}))
    with pytest.raises(TypeError, match="cannot send"):
        pack(RecordDict(), "x", {"f": object()})


def test_content_bytes_counts_the_serialised_arrays() -> None:
    content = RecordDict({"a": arrays_to_record({"g": {"k": np.zeros(100, np.float32)}})})
    # np.save adds a header to the 400 raw bytes: that is what crosses.
    assert 400 < content_bytes(content) < 600


# -- the same run on both engines --------------------------------------------------------------
class FailsOnClient(Technique):
    """Client 2's prepare raises: the round must go on with the survivors, on both engines."""

    name = "fails_on_client"

    def prepare(self, cctx: Any, data: Any) -> Any:
        if cctx.client_id == 2:
            raise RuntimeError("simulated client crash")
        return data


def _federation() -> Federation:
    torch.manual_seed(0)
    data = datasets.load("synthetic", clients=6, partition="dirichlet", alpha=0.5, seed=0)
    model = models.late_fusion(data.modalities, data.num_classes)
    return Federation(model, data, FedAvg([FailsOnClient()], clients_per_round=4, lr=0.1), seed=0)


@pytest.fixture(scope="module")
def both_engines() -> tuple[Any, Any]:
    # The Ray actors unpickle the test's technique class: send it by value.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    torch.set_num_threads(1)
    inproc = _federation().run(4, progress=False)
    flower = _federation().run(4, engine="flower", progress=False)
    return inproc, flower


def test_flower_simulation_ends_with_the_in_process_metrics(both_engines: tuple[Any, Any]) -> None:
    inproc, flower = both_engines
    assert len(inproc.rounds) == len(flower.rounds) == 4
    diffs = [abs(a[k] - b[k]) for a, b in zip(inproc.rounds, flower.rounds, strict=True) for k in METRICS]
    assert max(diffs) <= 1e-4
    # The measured client work is the same work.
    assert [r["ledger/flops"] for r in inproc.rounds] == [r["ledger/flops"] for r in flower.rounds]


def test_a_failing_client_is_dropped_on_flower_too(both_engines: tuple[Any, Any]) -> None:
    inproc, flower = both_engines
    dropped = [r["dropped"] for r in inproc.rounds]
    assert sum(dropped) >= 1, "client 2 was never selected: the fault rule went untested"
    assert [r["dropped"] for r in flower.rounds] == dropped
    assert not any(r["skipped"] for r in flower.rounds)
    # Flower's drops keep their cause too: the ClientApp's error text reaches the metrics row.
    for a, b in zip(inproc.rounds, flower.rounds, strict=True):
        if a["dropped"]:
            assert list(a["drop_causes"]) == ["RuntimeError: simulated client crash"]
            assert list(b["drop_causes"]) == ["ClientApp failed: RuntimeError: simulated client crash"]


def test_the_clientapps_own_error_is_found_in_flowers_reason() -> None:
    from fedmm.core.flower.apps import remote_error

    # Abridged from a simulation: Ray's colour codes, the actor's address, a chained traceback.
    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()"
        "\x1b[39m (pid=10166, repr=<ClientAppActor object at 0x7fd66af1bad0>)\n"
        '  File "/x/fedmm/core/client.py", line 149, in client_round\n'
        "    data = t.prepare(cctx, data)\n"
        "RuntimeError: simulated client crash\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "flwr.clientapp.client_app.ClientAppException: \n"
        "Exception ClientAppException occurred. Message: simulated client crash'>"
    )
    assert remote_error(reason) == "RuntimeError: simulated client crash"
    assert remote_error("\n  node went away \n") == "node went away"


def test_flower_ledger_counts_the_records_flower_carried(both_engines: tuple[Any, Any]) -> None:
    inproc, flower = both_engines
    for a, b in zip(inproc.rounds, flower.rounds, strict=True):
        # Same arrays plus Flower's serialisation headers and the plan/report/cost records.
        assert a["ledger/bytes_down"] < b["ledger/bytes_down"] < 1.1 * a["ledger/bytes_down"]
        assert a["ledger/bytes_up"] < b["ledger/bytes_up"] < 1.1 * a["ledger/bytes_up"]


def test_flower_ledger_carries_hook_costs_and_measures_the_server(both_engines: tuple[Any, Any]) -> None:
    inproc, flower = both_engines
    assert len(inproc.ledger) == len(flower.ledger) > 0
    for a, b in zip(inproc.ledger.records, flower.ledger.records, strict=True):
        # The cost record crossed as JSON with its per-hook dicts intact.
        assert b.flops_by_hook == a.flops_by_hook == {"train": a.flops, "prepare": 0}
        assert set(b.seconds_by_hook) == {"train", "prepare"} and b.seconds_by_hook["train"] > 0
        assert b.client_flops == a.client_flops
    # The ServerApp runs the same run_round: its phases are measured there too.
    assert [s.round for s in flower.ledger.server] == [1, 2, 3, 4]
    for s in flower.ledger.server:
        assert s.flops_by_phase == {} and s.seconds_by_phase["aggregate"] > 0 and s.eval_seconds > 0


def test_cli_runs_a_config_on_flower(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        '[run]\nname = "fl"\nrounds = 2\n'
        f'output_dir = "{tmp_path.as_posix()}"\n'
        '[data]\nname = "synthetic"\nclients = 4\n'
        "[strategy]\nclients_per_round = 2\n"
    )
    assert cli_main(["run", str(cfg), "--quiet", "--run-dir", str(tmp_path / "inproc")]) == 0
    assert (
        cli_main(["run", str(cfg), "--quiet", "--engine", "flower", "--run-dir", str(tmp_path / "fl")]) == 0
    )
    rows = {
        name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("inproc", "fl")
    }
    assert len(rows["fl"]) == 2
    for a, b in zip(rows["inproc"], rows["fl"], strict=True):
        for k in METRICS:
            assert abs(a[k] - b[k]) <= 1e-4


def test_flower_options_need_the_flower_engine() -> None:
    with pytest.raises(FedmmError, match="engine is not 'flower'"):
        _federation().run(1, flower={"client_cpus": 1.0}, progress=False)
