"""Run folders and checkpoints you can trust: checksums, --resume, --overwrite, retention, cleanup."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedmm.core import checkpoint as ckpt
from fedmm.core import runner
from fedmm.core.cli import main
from fedmm.core.config import load_config
from fedmm.core.engine import Engine
from fedmm.core.errors import CheckpointError, ConfigError, FedmmError
from fedmm.core.federation import Federation

SMALL = """
[run]
name = "tiny"
seed = 3
rounds = 3
output_dir = "{out}"
checkpoint_every = 1

[data]
name = "synthetic"
clients = 4
options = {{ num_samples = 200, test_samples = 100 }}

[model]
encoders = {{ a = "mlp", b = "mlp" }}

[strategy]
clients_per_round = 2
"""

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def _config(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text.format(out=tmp_path / "runs"))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 3-round run (checkpoints of rounds 2 and 3 kept); tests copy it."""
    base = tmp_path_factory.mktemp("finished")
    assert main(["run", str(_config(base)), "--run-dir", str(base / "run"), "-q"]) == 0
    return base / "run"


def _copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _cfg_of(finished: Path) -> Path:
    return finished.parent / "cfg.toml"


def _resume(cfg: Path, run_dir: Path, *extra: str) -> int:
    return main(["run", str(cfg), "--run-dir", str(run_dir), "--resume", "-q", *extra])


def _save_tiny(root: Path, round_: int, keep: int = 2) -> Path:
    weights = {"head": {"w": np.full((2, 2), float(round_), dtype=np.float32)}}
    return ckpt.save(root, round_, weights, {"note": np.arange(3), "round": round_}, keep=keep)


# -- 1. broken files: one error naming the file, never a traceback ------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not safetensors")


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_key(key: str) -> Callable[[Path], None]:
    def drop(path: Path) -> None:
        meta = json.loads(path.read_text())
        del meta[key]
        path.write_text(json.dumps(meta))

    return drop


BREAKAGES = [
    ("model.safetensors", _truncate),
    ("state.safetensors", _garbage),
    ("model.safetensors", _flip_last_byte),  # same length, silently different weights before
    ("state.json", _drop_key("state")),
    ("state.json", _drop_key("round")),
]


@pytest.mark.parametrize(("name", "breakage"), BREAKAGES)
def test_a_broken_checkpoint_file_is_named_in_one_error(
    tmp_path: Path, name: str, breakage: Callable[[Path], None]
) -> None:
    folder = _save_tiny(tmp_path, 1)
    breakage(folder / name)
    with pytest.raises(CheckpointError, match=rf"round-000001/{name}"):
        ckpt.load(tmp_path)


@pytest.mark.parametrize(("name", "breakage"), BREAKAGES[:2] + BREAKAGES[3:])
def test_a_broken_checkpoint_without_checksums_is_still_one_error(
    tmp_path: Path, name: str, breakage: Callable[[Path], None]
) -> None:
    """Checkpoints written before checksums (no manifest.json) are read, and checked on reading."""
    folder = _save_tiny(tmp_path, 1)
    (folder / ckpt.MANIFEST).unlink()
    assert ckpt.load(tmp_path)[0] == 1
    breakage(folder / name)
    with pytest.raises(CheckpointError, match=rf"round-000001/{name}"):
        ckpt.load(tmp_path)


def test_each_checkpoint_records_the_sha256_of_its_files(tmp_path: Path) -> None:
    import hashlib

    folder = _save_tiny(tmp_path, 4)
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    assert manifest["round"] == 4
    assert manifest["sha256"] == {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("model.safetensors", "state.safetensors", "state.json")
    }


@pytest.mark.parametrize(("name", "breakage"), BREAKAGES)
def test_resume_refuses_a_run_whose_only_checkpoints_are_broken(
    tmp_path: Path,
    finished: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    breakage: Callable[[Path], None],
) -> None:
    run_dir = _copy(finished, tmp_path)
    for folder in (run_dir / "checkpoint").glob("round-*"):
        breakage(folder / name)
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert _resume(_cfg_of(finished), run_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedmm: error: --resume: no valid checkpoint in {run_dir / 'checkpoint'}: ")
    assert f"round-000003/{name}" in err and f"round-000002/{name}" in err
    assert "--overwrite" in err and "Traceback" not in err and err.count("\n") == 1
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing removed or rewritten


def test_resume_refuses_a_non_utf8_latest_without_other_checkpoints(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(finished, tmp_path)
    for folder in (run_dir / "checkpoint").glob("round-*"):
        shutil.rmtree(folder)
    (run_dir / "checkpoint" / "LATEST").write_bytes(b"\xff\xfe round")
    assert _resume(_cfg_of(finished), run_dir) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / 'checkpoint' / 'LATEST'}: not UTF-8 text" in err and "Traceback" not in err


def test_resume_refuses_a_corrupt_config_json(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(finished, tmp_path)
    (run_dir / "config.json").write_text('{"run": {"rounds": 3')
    assert _resume(_cfg_of(finished), run_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedmm: error: --resume: {run_dir / 'config.json'} is not valid JSON")
    assert "Traceback" not in err
    (run_dir / "config.json").write_bytes(b"\xff\xff")
    assert _resume(_cfg_of(finished), run_dir) == 2
    assert f"{run_dir / 'config.json'} is not valid JSON" in capsys.readouterr().err
    (run_dir / "config.json").write_text("[1, 2]")
    assert _resume(_cfg_of(finished), run_dir) == 2
    assert f"{run_dir / 'config.json'} is not a fedmm run config" in capsys.readouterr().err


# -- 2. --resume takes the newest valid checkpoint and says which -------------------------------


def test_resume_skips_a_broken_newest_checkpoint_and_says_so(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(finished, tmp_path)
    _truncate(run_dir / "checkpoint" / "round-000003" / "model.safetensors")
    assert _resume(_cfg_of(finished), run_dir) == 0
    err = capsys.readouterr().err
    assert f"resuming {run_dir} from round 2 (checkpoint/round-000002)" in err
    assert "skipped" in err and "round-000003/model.safetensors" in err and "sha256" in err
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert ckpt.load(run_dir / "checkpoint")[0] == 3  # round 3 written again, valid


def test_resume_reports_latest_naming_a_missing_folder(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(finished, tmp_path)
    shutil.rmtree(run_dir / "checkpoint" / "round-000003")
    assert _resume(_cfg_of(finished), run_dir) == 0
    err = capsys.readouterr().err
    assert f"resuming {run_dir} from round 2 (checkpoint/round-000002)" in err
    assert "LATEST names round-000003, which does not exist" in err

    # With no other checkpoint it is refused, never a silent start from round 0.
    for folder in (run_dir / "checkpoint").glob("round-*"):
        shutil.rmtree(folder)
    (run_dir / "checkpoint" / "LATEST").write_text("round-000007")
    rows_before = (run_dir / "metrics.jsonl").read_text()
    assert _resume(_cfg_of(finished), run_dir) == 2
    err = capsys.readouterr().err
    assert "LATEST names round-000007, which does not exist" in err and err.startswith("fedmm: error:")
    assert (run_dir / "metrics.jsonl").read_text() == rows_before


def test_federation_resume_without_any_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    fed = runner.build_federation(cfg)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "LATEST").write_text("round-000004")
    with pytest.raises(CheckpointError, match="LATEST names round-000004, which does not exist"):
        fed.run(2, progress=False, checkpoint_dir=tmp_path / "ck", resume=True)
    assert fed.round == 0 and not fed.history.rounds
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        fed.run(2, progress=False, checkpoint_dir=tmp_path / "empty", resume=True)


# -- 3. an existing run folder is never overwritten ------------------------------------------


def test_an_existing_run_folder_is_refused_without_resume_or_overwrite(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(finished, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "--run-dir", str(run_dir), "--rounds", "1", "-q"]) == 2
    assert capsys.readouterr().err == (
        f"fedmm: error: {run_dir} already holds a run; continue it with --resume, "
        "replace it with --overwrite, or give another --run-dir\n"
    )
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before

    # --overwrite replaces it: the old run's files go first, so its checkpoints cannot win later.
    (run_dir / "old-note.txt").write_text("from the old run")
    assert main(["run", str(cfg), "--run-dir", str(run_dir), "--rounds", "1", "--overwrite", "-q"]) == 0
    assert not (run_dir / "old-note.txt").exists()
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["LATEST", "round-000001"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    # ... and that run resumes from its own checkpoint.
    assert _resume(cfg, run_dir, "--rounds", "2") == 0
    assert "from round 1 (checkpoint/round-000001)" in capsys.readouterr().err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_overwrite_and_resume_exclude_each_other_and_overwrite_spares_other_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(_config(tmp_path))
    with pytest.raises(ConfigError, match="--resume and --overwrite exclude each other"):
        runner.run_config(cfg, tmp_path / "r", resume=True, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="is not empty and is not a fedmm run folder"):
        runner.run_config(cfg, other, overwrite=True, progress=False)
    assert (other / "thesis.tex").read_text() == "keep me"
    # An empty folder is fine to run into.
    (tmp_path / "empty").mkdir()
    run_dir, _ = runner.run_config(cfg, tmp_path / "empty", progress=False)
    assert (run_dir / "metrics.jsonl").exists()


def test_an_existing_multi_seed_folder_is_refused_and_overwritten_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(_config(tmp_path), ["run.rounds=1"])
    multi = tmp_path / "multi"
    runner.run_config_seeds(cfg, "0-1", multi, progress=False)
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        runner.run_config_seeds(cfg, "0-1", multi, progress=False)
    runner.run_config_seeds(cfg, "2", multi, overwrite=True, progress=False)
    assert sorted(p.name for p in multi.glob("seed-*")) == ["seed-2"]

    # --resume: a seed folder without a checkpoint starts anew and says so (not refused).
    shutil.rmtree(multi / "seed-2" / "checkpoint")
    runner.run_config_seeds(cfg, "2", multi, resume=True, progress=False)
    assert "seed-2 has no checkpoint; starting it anew" in capsys.readouterr().err
    assert (multi / "seed-2" / "checkpoint" / "LATEST").exists()


# -- retention ------------------------------------------------------------------------------


def test_retention_keeps_the_checkpoint_just_written_despite_stale_higher_rounds(tmp_path: Path) -> None:
    _save_tiny(tmp_path, 8)
    _save_tiny(tmp_path, 9)  # a longer earlier run's checkpoints
    for round_ in (1, 2, 3):
        _save_tiny(tmp_path, round_)
        assert (tmp_path / f"round-{round_:06d}").is_dir()
        assert ckpt.load(tmp_path)[0] == round_
    names = sorted(p.name for p in tmp_path.glob("round-*"))
    assert names == ["round-000002", "round-000003", "round-000008", "round-000009"]


def test_retention_counts_rounds_past_a_million_by_number(tmp_path: Path) -> None:
    for round_ in (999_999, 1_000_000, 1_000_001):
        _save_tiny(tmp_path, round_)
    assert sorted(p.name for p in tmp_path.glob("round-*")) == ["round-1000000", "round-1000001"]
    assert ckpt.load(tmp_path)[0] == 1_000_001


# -- 4. resume from Python needs a run folder ------------------------------------------------


def test_python_resume_without_a_run_folder_is_refused_clearly(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    with pytest.raises(ConfigError) as info:
        runner.run_config(cfg, None, resume=True)
    assert str(info.value) == (
        "resume=True needs the run folder to continue: pass run_dir (fedmm run --resume --run-dir DIR)"
    )
    with pytest.raises(ConfigError, match="resume=True needs the run folder"):
        runner.run_config_seeds(cfg, "0-1", None, resume=True)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match=f"--resume: {tmp_path / 'absent'} does not exist"):
        runner.run_config(cfg, tmp_path / "absent", resume=True)
    assert not (tmp_path / "absent").exists()


# -- 5. a run that fails before round 1 leaves no folder -------------------------------------


def _fail_dataset(*args: object, **kwargs: object) -> None:
    raise FedmmError("the dataset is broken")


def test_a_run_that_fails_before_round_one_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "build_dataset", _fail_dataset)
    cfg = _config(tmp_path)
    for _ in range(3):
        assert main(["run", str(cfg), "-q"]) == 2
    assert capsys.readouterr().err.count("the dataset is broken") == 3
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "r"), "-q"]) == 2
    assert not (tmp_path / "r").exists()
    assert main(["run", str(cfg), "--seeds", "0-1", "--run-dir", str(tmp_path / "m"), "-q"]) == 2
    assert not (tmp_path / "m").exists()
    # An empty folder the user made stays, empty.
    (tmp_path / "mine").mkdir()
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "mine"), "-q"]) == 2
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_a_failed_resume_keeps_the_folder(
    tmp_path: Path, finished: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _copy(finished, tmp_path)
    monkeypatch.setattr(runner, "build_dataset", _fail_dataset)
    assert _resume(_cfg_of(finished), run_dir) == 2
    assert (run_dir / "checkpoint" / "LATEST").exists() and (run_dir / "metrics.jsonl").exists()


# -- 6. Ctrl-C says exactly how to continue ---------------------------------------------------


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, stop_round: int) -> None:
    run_round = Federation.run_round

    def interrupted(self: Federation, round_: int, engine: Engine | None = None) -> dict[str, object]:
        if round_ == stop_round:
            raise KeyboardInterrupt
        return run_round(self, round_, engine)

    monkeypatch.setattr(Federation, "run_round", interrupted)


def test_ctrl_c_names_the_command_that_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    run_dir = tmp_path / "r"
    _interrupt_at(monkeypatch, 3)
    args = ["run", str(cfg), "--run-dir", str(run_dir), "--set", "strategy.lr=0.05", "-q"]
    assert main(args) == 130
    err = capsys.readouterr().err
    command = f"fedmm run {cfg} --run-dir {run_dir} --resume --set strategy.lr=0.05"
    assert err == (
        f"fedmm: interrupted in round 3; the last checkpoint is of round 2 ({run_dir / 'checkpoint'}"
        f"/round-000002). Continue with:\n  {command}\n"
    )
    monkeypatch.undo()
    assert main([*command.split()[1:], "-q"]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_ctrl_c_before_any_checkpoint_says_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, SMALL.replace("checkpoint_every = 1", "checkpoint_every = 0"))
    _interrupt_at(monkeypatch, 2)
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "r"), "-q"]) == 130
    assert capsys.readouterr().err == (
        "fedmm: interrupted in round 2 before any checkpoint was written, so "
        f"{tmp_path / 'r'} cannot be resumed ([run].checkpoint_every sets how often one is written); "
        "run it again with --overwrite\n"
    )
    assert (tmp_path / "r" / "metrics.jsonl").exists()  # round 1 finished: its folder stays

    _interrupt_at(monkeypatch, 1)
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "r1"), "-q"]) == 130
    assert capsys.readouterr().err == (
        "fedmm: interrupted in round 1; no checkpoint was written and no run folder was kept\n"
    )
    assert not (tmp_path / "r1").exists()


def test_ctrl_c_of_a_multi_seed_run_names_the_seeds_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    multi = tmp_path / "m"
    calls = {"n": 0}
    run_round = Federation.run_round

    def interrupted(self: Federation, round_: int, engine: Engine | None = None) -> dict[str, object]:
        calls["n"] += 1
        if calls["n"] == 5:  # seed 1, round 2
            raise KeyboardInterrupt
        return run_round(self, round_, engine)

    monkeypatch.setattr(Federation, "run_round", interrupted)
    assert main(["run", str(cfg), "--seeds", "0-1", "--run-dir", str(multi), "-q"]) == 130
    err = capsys.readouterr().err
    assert err.endswith(f"Continue with:\n  fedmm run {cfg} --run-dir {multi} --resume --seeds 0-1\n")
    monkeypatch.undo()
    assert main(["run", str(cfg), "--run-dir", str(multi), "--resume", "--seeds", "0-1", "-q"]) == 0
    assert json.loads((multi / "summary.json").read_text())["rounds"] == [3, 3]


def test_the_shipped_examples_write_checkpoints_during_the_run() -> None:
    examples = sorted(EXAMPLES.glob("*.toml"))
    assert examples
    for path in examples:
        run = tomllib.loads(path.read_text())["run"]
        every = run.get("checkpoint_every", 0)
        assert 0 < every < run["rounds"], path.name


def test_a_checkpoint_keeps_the_shape_of_zero_dimensional_arrays(tmp_path: Path) -> None:
    # Was: np.ascontiguousarray gave 0-d arrays (a CLIP logit scale, Adam's step) shape (1,).
    from fedmm.core import checkpoint

    arrays = {"head": {"scale": np.array(2.5, dtype=np.float32), "w": np.ones((2, 3), np.float32)}}
    state = {"optimizer": {"step": np.array(7.0), "m": [np.zeros(4)]}}
    path = checkpoint.save(tmp_path, 3, arrays, state)
    round_, loaded, loaded_state = checkpoint.load(path)
    assert round_ == 3
    assert loaded["head"]["scale"].shape == () and float(loaded["head"]["scale"]) == 2.5
    assert loaded["head"]["w"].shape == (2, 3)
    assert loaded_state["optimizer"]["step"].shape == () and float(loaded_state["optimizer"]["step"]) == 7.0
    assert loaded_state["optimizer"]["m"][0].shape == (4,)
