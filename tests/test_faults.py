"""Fault injection (docs/reliability.md): bad data, corrupt and non-finite checkpoints, kills at
several points (in process and a real SIGKILL), changed configs and shared workdirs. Each case
is a small run of ``tiny_config``; the finished uninterrupted run is shared by the module."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import build_once, tiny_config

from bnnns.data import load_dataset
from bnnns.data.npz import SparseLabelsWarning
from bnnns.errors import CheckpointError, ConfigError, DataError, NonFiniteError, WorkdirError
from bnnns.train.checkpointing import StageCheckpointer
from bnnns.train.metric_writer import read_metrics
from bnnns.train.train_lib import train_and_evaluate
from bnnns.train.workdir import WorkdirLock

# Checkpoints are also read raw (newest_arrays), which orbax warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 8 steps per epoch, 2 epochs per stage; saves at steps 3, 6, 8, 9, 12, 15, 16 (2 kept).
# The LNS learning rate is raised so that its binary weights flip (the flip rate is checked).
OVERRIDES = {"checkpoint_every_steps": 3, "lns.learning_rate": 2e-3}


def config(**overrides):
    return tiny_config(**{**OVERRIDES, **overrides})


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every fault is compared with (read-only: copy it to change it)."""
    return build_once(
        tmp_path_factory, "faults-straight", lambda d: train_and_evaluate(config(), str(d))
    )


def copy_run(source, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("bnnns.lock"))
    return target


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_same_run(expected, actual):
    """Identical metrics.jsonl and summary.json (timings aside) and identical final states."""
    a, b = read_metrics(str(expected)), read_metrics(str(actual))
    assert [(r["stage"], r["step"]) for r in b] == [(r["stage"], r["step"]) for r in a]
    assert without_timings(b) == without_timings(a)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (expected, actual)]
    assert without_timings(summaries[1]) == without_timings(summaries[0])
    for stage in ("pretrain", "lns"):
        jax.tree.map(
            np.testing.assert_array_equal,
            newest_arrays(expected / "checkpoints" / stage),
            newest_arrays(actual / "checkpoints" / stage),
        )


def newest_arrays(directory):
    """The arrays of the newest checkpoint in ``directory``, read raw (no model, no data)."""
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    return ocp.PyTreeCheckpointer().restore(str(directory / str(step) / "state"))


def crash_after_save(monkeypatch, stage, step):
    """Raise Crash once ``stage`` has saved (and finished writing) its checkpoint of ``step``."""
    original = StageCheckpointer.save

    def save(self, at, state, meta):
        original(self, at, state, meta)
        if os.path.basename(self.directory) == stage and at == step:
            self.wait()
            raise Crash(f"{stage} step {step}")

    monkeypatch.setattr(StageCheckpointer, "save", save)


# A run in a subprocess that SIGKILLs itself as soon as the LNS stage has issued its save of
# step 12 (mid-epoch 2): the asynchronous write of step 12 is cut off wherever it was (step 9
# is complete, since orbax finishes one save before it starts the next).
KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from helpers import tiny_config
    from bnnns.train.checkpointing import StageCheckpointer
    from bnnns.train.train_lib import train_and_evaluate

    original = StageCheckpointer.save
    def save(self, step, state, meta):
        original(self, step, state, meta)
        if os.path.basename(self.directory) == "lns" and step == 12:
            os.kill(os.getpid(), signal.SIGKILL)
    StageCheckpointer.save = save
    overrides = {overrides!r}
    train_and_evaluate(tiny_config(**overrides), sys.argv[1])
    """
)


def run_python(code, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_kills_at_several_points_change_nothing(straight, tmp_path, monkeypatch):
    """A crash mid-epoch in pretrain, then a real kill -9 mid-epoch inside LNS after its first
    checkpoints: the resumed run's records, summary and weights equal the uninterrupted run's."""
    workdir = tmp_path / "resumed"
    with monkeypatch.context() as m:
        crash_after_save(m, "pretrain", 6)
        with pytest.raises(Crash):
            train_and_evaluate(config(), str(workdir))
    assert [r["step"] for r in read_metrics(str(workdir))] == []
    done = run_python(KILL_SCRIPT.format(overrides=OVERRIDES), workdir)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    lns = workdir / "checkpoints" / "lns"
    kept = {int(p.name) for p in lns.iterdir() if p.name.isdigit()}
    assert 9 in kept and kept <= {8, 9, 12}, kept  # 12 only if its write beat the kill
    train_and_evaluate(config(), str(workdir))
    assert_same_run(straight, workdir)
    records = read_metrics(str(workdir))
    assert all(r["flip_rate"] > 0 for r in records), [r["flip_rate"] for r in records]


def corrupt(step_dir, how):
    if how == "deleted metadata":
        os.remove(step_dir / "meta" / "metadata")
        return
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    data = max(files, key=lambda p: p.stat().st_size)  # the arrays' data file
    raw = bytearray(data.read_bytes())
    if how == "bit flip":
        middle = len(raw) // 2
        raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    else:  # truncation
        raw = raw[: len(raw) // 2]
    data.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["bit flip", "truncation", "deleted metadata"])
def test_corrupt_newest_checkpoint_falls_back(straight, tmp_path, capsys, how):
    workdir = copy_run(straight, tmp_path)
    ckpt = workdir / "checkpoints" / "lns"
    corrupt(ckpt / "16", how)
    capsys.readouterr()
    train_and_evaluate(config(), str(workdir))
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "unusable" in line]
    assert len(warnings) == 1 and str(ckpt / "16") in warnings[0], out
    assert "using step 15" in warnings[0]
    assert (workdir / "checkpoints" / "lns.corrupt" / "16").is_dir()  # kept, out of the way
    assert_same_run(straight, workdir)


def test_no_intact_checkpoint_left_is_one_clear_error(straight, tmp_path):
    workdir = copy_run(straight, tmp_path)
    ckpt = workdir / "checkpoints" / "lns"
    for step in ("15", "16"):
        corrupt(ckpt / step, "deleted metadata")
    with pytest.raises(CheckpointError) as info:
        train_and_evaluate(config(), str(workdir))
    message = str(info.value)
    assert f"no intact checkpoint left in {ckpt}" in message and "\n" not in message
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["15", "16"]


def test_diverging_run_never_keeps_a_non_finite_checkpoint(tmp_path):
    c = tiny_config(stages="pretrain", checkpoint_every_steps=2)
    c.pretrain.update(optimizer="sgd", learning_rate=1e3, schedule="constant")
    messages = []
    for _ in range(2):  # the run, then a rerun: both say why they stop
        with pytest.raises(NonFiniteError) as info:
            train_and_evaluate(c, str(tmp_path))
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "non-finite" in messages[0] and "config.pretrain.learning_rate=1000.0" in messages[0]
    ckpt = tmp_path / "checkpoints" / "pretrain"
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert steps and f"newest checkpoint: step {steps[-1]}" in messages[0]
    for step in steps:
        arrays = ocp.PyTreeCheckpointer().restore(str(ckpt / str(step) / "state"))
        for leaf in jax.tree.leaves(arrays):
            if np.issubdtype(np.asarray(leaf).dtype, np.inexact):
                assert np.all(np.isfinite(leaf)), step
    assert all(np.isfinite(r["train_loss"]) for r in read_metrics(str(tmp_path)))


def test_non_finite_pixels_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.random((64, 8, 8), dtype=np.float32)
    x_train[3, 1, 1], x_train[7, 0, 0] = np.nan, np.inf
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=rng.integers(0, 4, 64),
        x_test=rng.random((8, 8, 8), dtype=np.float32),
        y_test=rng.integers(0, 4, 8),
    )
    with pytest.raises(DataError) as info:
        train_and_evaluate(tiny_config(dataset=f"npz:{path}", batch_size=8), str(tmp_path / "w"))
    message = str(info.value)
    assert str(path) in message and "'x_train'" in message and "2 non-finite" in message
    assert not (tmp_path / "w").exists()


def test_stray_label_warns(tmp_path):
    rng = np.random.default_rng(0)
    y_train = np.arange(64) % 10
    y_train[5] = 999
    path = tmp_path / "stray.npz"
    x = rng.integers(0, 255, (64, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=y_train, x_test=x[:8], y_test=np.arange(8))
    with pytest.warns(SparseLabelsWarning, match=r"stray.npz: 'y_train' has 1 label\(s\) >= 11"):
        _, info = load_dataset(f"npz:{path}")
    assert info.num_classes == 1000


def test_batch_larger_than_the_data(tmp_path):
    with pytest.raises(ConfigError) as info:
        train_and_evaluate(tiny_config(batch_size=1024), str(tmp_path))
    assert "config.batch_size=1024" in str(info.value) and "512 training images" in str(info.value)
    assert not tmp_path.joinpath("config.json").exists()


def test_rerun_with_another_config_is_refused_before_writing(straight):
    before = {n: (straight / n).read_bytes() for n in ("config.json", "summary.json")}
    metrics = (straight / "metrics.jsonl").read_bytes()
    changed = config(batch_size=128)
    changed.model.width = 8
    for bad, fields in (
        (changed, ("batch_size: 64 -> 128", "model.width: 4 -> 8")),
        (config(**{"lns.epochs": 1.0}), ("lns.epochs: 2.0 -> 1.0 (epochs may only grow)",)),
    ):
        with pytest.raises(WorkdirError) as info:
            train_and_evaluate(bad, str(straight))
        assert all(f in str(info.value) for f in fields), str(info.value)
    assert {n: (straight / n).read_bytes() for n in before} == before
    assert (straight / "metrics.jsonl").read_bytes() == metrics


def test_rerun_may_change_logging(straight, tmp_path):
    """A rerun of the finished run with other logging fields is accepted and redoes nothing:
    no record logged again, no checkpoint written, the stored accuracy returned."""
    workdir = copy_run(straight, tmp_path)
    checkpoints = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    summary = train_and_evaluate(
        config(log_every_steps=8, eval_batch_size=500, data_threads=0), str(workdir)
    )
    assert json.loads((workdir / "config.json").read_text())["log_every_steps"] == 8
    assert (workdir / "metrics.jsonl").read_bytes() == (straight / "metrics.jsonl").read_bytes()
    now = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    assert [p for p in now if "checkpoints" in p] == [p for p in checkpoints if "checkpoints" in p]
    stored = json.loads((straight / "summary.json").read_text())
    assert [s["test_accuracy"] for s in summary["stages"]] == [
        s["test_accuracy"] for s in stored["stages"]
    ]


def test_rerun_removes_unfinished_saves(straight, tmp_path):
    """A save cut off by a full disk or a kill leaves ``<step>.orbax-checkpoint-tmp``; a rerun
    removes it even where it never saves that step again, and keeps every finished one."""
    workdir = copy_run(straight, tmp_path)
    stray = workdir / "checkpoints" / "lns" / "17.orbax-checkpoint-tmp"
    (stray / "state").mkdir(parents=True)
    (stray / "state" / "half").write_bytes(b"x" * 100)
    train_and_evaluate(config(), str(workdir))
    assert not stray.exists()
    for stage in ("pretrain", "lns"):
        kept = sorted(p.name for p in (workdir / "checkpoints" / stage).iterdir())
        assert kept == sorted(p.name for p in (straight / "checkpoints" / stage).iterdir())


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from bnnns.train.workdir import WorkdirLock
    WorkdirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_second_run_on_a_workdir_is_refused(tmp_path):
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(WorkdirError) as info:
                train_and_evaluate(tiny_config(), str(tmp_path))
            message = str(info.value)
            assert f"workdir {tmp_path} is in use" in message and f"pid {holder.pid}" in message
            assert not (tmp_path / "config.json").exists()
        finally:
            holder.kill()  # a kill -9: the lock file stays behind, stale
    lock = WorkdirLock(str(tmp_path))  # the dead holder's lock file is stale: taken over
    lock.acquire()
    with pytest.raises(WorkdirError):
        WorkdirLock(str(tmp_path)).acquire()
    lock.release()


def test_cli_prints_user_errors_without_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config",
            "configs/mnist_lns.py",
            f"--workdir={tmp_path}",
            "--config.log_every_steps=0",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: config.log_every_steps=0 is not allowed: must be an integer >= 1" in done.stderr
