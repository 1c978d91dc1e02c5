"""Experiment trackers: ``[run] trackers = ["tensorboard", "mlflow"]``.

A tracker gets the validated config once, then every round's numeric metrics (accuracy, loss,
per-modality accuracy, technique metrics, and the round's ledger totals as ``ledger/*``) with the
round number as the step.

* ``tensorboard`` (extra ``fedmm-core[tensorboard]``) writes event files to ``<run>/tensorboard/``
  through torch's ``SummaryWriter``; the config is a text summary ``config``. ``tensorboard
  --logdir runs/`` shows every run folder under ``runs/``.
* ``mlflow`` (extra ``fedmm-core[mlflow]``: the ``mlflow-skinny`` client, no server) logs to
  ``MLFLOW_TRACKING_URI`` when it is set, else to the file store ``./mlruns`` of the current
  directory, so that runs started from one place share one store. One MLflow experiment per
  ``[run].name``, one MLflow run per run folder (a seed of ``--seeds`` is a run folder); the
  config is logged as params (``strategy.lr``, ``techniques.0.name``, ...) and as the artifact
  ``config.json``. Metric names use ``.`` where fedmm's use ``/`` (``accuracy.a``,
  ``ledger.bytes_up``): MLflow's file store keeps a metric per file, so it cannot hold both
  ``accuracy`` and ``accuracy/a``. ``--resume`` continues the same MLflow run (its id is kept in
  ``<run>/trackers.json``). MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE=true``;
  fedmm sets that (when unset) only where it chose ``./mlruns`` itself. To browse it, install the
  full ``mlflow`` and run ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ./mlruns``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, get_args

from fedmm.core.config import TrackerName
from fedmm.core.errors import ConfigError, FedmmError, MissingDependencyError

TRACKER_NAMES: tuple[str, ...] = get_args(TrackerName)
STATE_FILE = "trackers.json"


class Tracker(Protocol):
    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def round_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, without the round number itself (it is the step)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k != "round" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables and lists of tables → dotted keys: ``strategy.lr``, ``techniques.0.name``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, name + "."))
        else:
            out[name] = value
    return out


def _missing(name: str, what: str) -> MissingDependencyError:
    return MissingDependencyError(
        f'the {name!r} tracker ([run].trackers) needs {what}: pip install "fedmm-core[{name}]"'
    )


def require(names: Sequence[str]) -> None:
    """Fail now, before any training, for an unknown tracker or one whose extra is missing."""
    for name in names:
        if name not in TRACKER_NAMES:
            raise ConfigError(f"[run].trackers: unknown tracker {name!r}; valid: {', '.join(TRACKER_NAMES)}")
        if name == "tensorboard":
            try:
                import torch.utils.tensorboard  # noqa: F401
            except ImportError:
                raise _missing(name, "TensorBoard") from None
        elif name == "mlflow":
            try:
                import mlflow  # noqa: F401
            except ImportError:
                raise _missing(name, "MLflow") from None


class TensorBoardTracker:
    """Scalars per round and the config as text, in ``<run>/tensorboard/``."""

    def __init__(self, run_dir: Path, *, experiment: str, run_name: str, resume: bool) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "TensorBoard") from None
        self.log_dir = Path(run_dir) / "tensorboard"
        # A resumed run adds a new event file to the same folder; TensorBoard reads them as one run.
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_config(self, config: Mapping[str, Any]) -> None:
        # Markdown code block: TensorBoard's text plugin renders Markdown.
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```")

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a `tensorboard` watching the folder sees each round as it ends

    def close(self, failed: bool = False) -> None:
        self.writer.close()


_MLFLOW_KEY = re.compile(r"[^\w\-. :]")  # refused by MLflow, or "/": a folder in its file store
_MLFLOW_PARAM_MAX = 6000  # MLflow's limit on a param value's length


def mlflow_key(name: str) -> str:
    """``accuracy/a`` → ``accuracy.a`` (see the module docstring); other odd characters → ``_``."""
    return _MLFLOW_KEY.sub("_", name.replace("/", "."))


class MLflowTracker:
    """Metrics per round (step = round), the config as params and ``config.json``."""

    def __init__(self, run_dir: Path, *, experiment: str, run_name: str, resume: bool) -> None:
        try:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "MLflow") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.state_path = Path(run_dir) / STATE_FILE
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            resumed = self._resumed_run(uri) if resume else None
            if resumed is None:
                found = self.client.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
                run = self.client.create_run(
                    exp_id, run_name=run_name, tags={"fedmm.run_dir": str(Path(run_dir).resolve())}
                )
                self.run_id: str = run.info.run_id
            else:
                self.run_id = resumed
                self.client.update_run(self.run_id, status="RUNNING")
        except MlflowException as exc:
            raise FedmmError(
                f"the 'mlflow' tracker cannot use the tracking store {uri}: {exc.message}"
            ) from None
        state = self._state()
        state["mlflow"] = {"tracking_uri": uri, "run_id": self.run_id}
        self.state_path.write_text(json.dumps(state, indent=2))

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _resumed_run(self, uri: str) -> str | None:
        from mlflow.exceptions import MlflowException

        saved = self._state().get("mlflow", {})
        if saved.get("tracking_uri") != uri or not saved.get("run_id"):
            return None
        try:
            return str(self.client.get_run(saved["run_id"]).info.run_id)
        except MlflowException:
            return None  # the store was cleared: start a new MLflow run

    def log_config(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        with self._errors():
            # A resumed run keeps its params: MLflow refuses to change a logged param's value.
            known = set(self.client.get_run(self.run_id).data.params)
            params = [
                Param(mlflow_key(k), (v if isinstance(v, str) else json.dumps(v))[:_MLFLOW_PARAM_MAX])
                for k, v in flatten(config).items()
            ]
            params = [p for p in params if p.key not in known]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
            self.client.log_text(self.run_id, json.dumps(config, indent=2), "config.json")

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), v, now, step) for k, v in metrics.items()]
        with self._errors():
            for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
                self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def close(self, failed: bool = False) -> None:
        with self._errors():
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            raise FedmmError(f"the 'mlflow' tracker failed on the store {self.uri}: {exc.message}") from None


TRACKERS: dict[str, type[TensorBoardTracker] | type[MLflowTracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MLflowTracker,
}


class Trackers:
    """The trackers of one run folder, used as one (``with Trackers(...) as t: t.log_round(...)``)."""

    def __init__(
        self, names: Sequence[str], run_dir: Path, *, experiment: str, run_name: str, resume: bool = False
    ) -> None:
        require(names)
        self.trackers: list[Tracker] = []
        try:
            for name in names:
                self.trackers.append(
                    TRACKERS[name](run_dir, experiment=experiment, run_name=run_name, resume=resume)
                )
        except BaseException:
            self.close(failed=True)
            raise

    def log_config(self, config: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_config(config)

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        for t in self.trackers:
            t.log_round(step, metrics)

    def close(self, failed: bool = False) -> None:
        for t in self.trackers:
            t.close(failed)
        self.trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc is not None)


__all__ = [
    "TRACKERS",
    "TRACKER_NAMES",
    "MLflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "Trackers",
    "flatten",
    "mlflow_key",
    "require",
    "round_metrics",
]
