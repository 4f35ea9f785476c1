"""Preemption (docs/reliability.md): a real SIGTERM to ``train.py`` mid-epoch saves that step and
exits with status 75; the rerun ends with the records, summary and weights of an uninterrupted
run. Also: the signal handling itself, and time-based saves that change nothing."""

import json
import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from train_process import ROOT, hook, launch, train_env, wait_all

from bnnns.train.checkpointing import StageCheckpointer
from bnnns.train.default_config import load_config_file
from bnnns.train.metric_writer import read_metrics
from bnnns.train.preemption import PREEMPTED_EXIT_CODE, StopRequests
from bnnns.train.train_lib import train_and_evaluate

pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")
CONFIG = os.path.join(ROOT, "configs", "mnist_lns.py")
# 8 steps per epoch, 2 epochs of pretrain (saves at 3, 6, 8, 9, 12, 15, 16). The stage is the
# same loop in every stage: pretrain only keeps the test short.
OVERRIDES = {
    "stages": "pretrain",
    "train_subset": 512,
    "batch_size": 64,
    "eval_batch_size": 2000,
    "model.width": 4,
    "pretrain.epochs": 2,
    "checkpoint_every_steps": 3,
    "log_every_steps": 4,
    "progress_bar": False,
}
STOP_AT = 5  # pretrain step 5: after the save of step 3, so the epoch's sums are half carried


def config(**extra):
    return load_config_file(CONFIG, {**OVERRIDES, **extra})


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def newest_arrays(directory):
    step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    return ocp.PyTreeCheckpointer().restore(str(directory / str(step) / "state"))


def assert_same_run(expected, actual, stages=("pretrain",)):
    a, b = read_metrics(str(expected)), read_metrics(str(actual))
    assert [(r["stage"], r["step"]) for r in b] == [(r["stage"], r["step"]) for r in a]
    assert without_timings(b) == without_timings(a)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (expected, actual)]
    assert without_timings(summaries[1]["stages"]) == without_timings(summaries[0]["stages"])
    for stage in stages:
        jax.tree.map(
            np.testing.assert_array_equal,
            newest_arrays(expected / "checkpoints" / stage),
            newest_arrays(actual / "checkpoints" / stage),
        )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    train_and_evaluate(config(), str(workdir))
    return workdir


@pytest.mark.slow
def test_sigterm_mid_epoch_then_rerun_equals_uninterrupted(straight, tmp_path, monkeypatch):
    """The rerun also saves after every step (``checkpoint_every_minutes`` tiny, a field a
    rerun may change): those mid-epoch saves keep their sums on device, as a preemption's
    does, and must not change the records either."""
    workdir = tmp_path / "preempted"
    flags = ["--config", CONFIG, f"--workdir={workdir}"]
    flags += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    # train.py as a user runs it, except that the train step of STOP_AT sends this process a
    # real SIGTERM (as a scheduler would, but at a known step).
    log = str(tmp_path / "preempted.log")
    env = train_env(**hook("sigterm", "pretrain", STOP_AT))
    (code,) = wait_all([launch(flags, log, env, hooked=True)])
    output = open(log).read()
    assert code == PREEMPTED_EXIT_CODE, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("bnnns: preempted")]
    ckpt = workdir / "checkpoints" / "pretrain"
    assert lines == [
        f"bnnns: preempted (SIGTERM): [pretrain] saved step {STOP_AT} to {ckpt}; "
        "rerun the same command to resume from it"
    ], output[-3000:]
    assert max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == STOP_AT
    assert read_metrics(str(workdir)) == []  # stopped inside the first epoch
    saved = []
    original = StageCheckpointer.save
    monkeypatch.setattr(
        StageCheckpointer,
        "save",
        lambda self, step, *a: saved.append(step) or original(self, step, *a),
    )
    train_and_evaluate(config(checkpoint_every_minutes=1e-9), str(workdir))
    assert saved == list(range(STOP_AT + 1, 17))
    assert_same_run(straight, workdir)
    assert all(r["flip_rate"] > 0 for r in read_metrics(str(workdir)))


def test_signals_ask_once_then_act_as_before():
    # Python's own Ctrl-C handler first: an xdist worker may run with SIGINT ignored, and a
    # second signal acts as the handler from before did.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stop = StopRequests()
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with stop.installed():
            assert not stop.should_stop()
            signal.raise_signal(signal.SIGINT)
            assert stop.should_stop() and stop.signal_name == "SIGINT"
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: Python's default again
                signal.raise_signal(signal.SIGINT)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        with StopRequests().installed() as other:
            signal.raise_signal(signal.SIGTERM)
            assert other.should_stop() and other.signal_name == "SIGTERM"
    finally:
        signal.signal(signal.SIGINT, outer)


def test_time_interval():
    assert not StopRequests(0.0).should_save(True)
    due = StopRequests(1e-9)
    assert due.should_save(False)
    slow = StopRequests(60.0)
    assert not slow.should_save(True)


def test_config_checkpoint_every_minutes_is_checked():
    from helpers import tiny_config

    from bnnns.errors import ConfigError
    from bnnns.train.config_checks import validate_config

    validate_config(tiny_config(checkpoint_every_minutes=0.5))
    with pytest.raises(ConfigError, match=r"config.checkpoint_every_minutes=-1.5 is not allowed"):
        validate_config(tiny_config(checkpoint_every_minutes=-1.5))
