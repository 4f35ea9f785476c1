"""Two processes on 127.0.0.1 through ``jax.distributed`` (issue 4).

``train.py`` is launched twice with ``--coordinator_address/--num_processes/--process_id``
(one CPU device each, gloo collectives) next to a single-process run of the same config on
two (virtual CPU) devices. The two-process run must end where the single-process one ends,
write its outputs once (process 0), compile its train step once per stage, and leave
checkpoints that restore, and resume, in a single process with one device.

The reference has the two processes' device count, so both runs partition every reduction the
same way and the comparison holds the model's sign activations to float32 round-off: 1 vs 8
devices (different partial sums) is tests/test_sharding.py's job, where a BatchNorm output
within ~1e-7 of 0 may legitimately take the other sign.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import build_once

from bnnns.train.default_config import load_config_file
from bnnns.train.metric_writer import read_metrics
from bnnns.train.train_lib import restore_stage, train_and_evaluate

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "mnist_lns.py")
# A tiny run: 4 steps per stage. SGD in both stages: Adam's first step is lr * sign(g), which
# turns the round-off of a gradient that is 0 in exact arithmetic into a full step.
OVERRIDES = {
    "train_subset": 256,
    "batch_size": 64,
    "model.width": 4,
    "pretrain.epochs": 1,
    "pretrain.optimizer": "sgd",
    "pretrain.learning_rate": 0.05,
    "lns.epochs": 1,
    "lns.optimizer": "sgd",
    "lns.learning_rate": 1e-3,
    "lns.warmup_steps": 25,
    "progress_bar": False,
}
TIMEOUT_S = 300  # a hang (e.g. a collective waiting for a dead peer) fails instead of blocking
# XLA's CPU backend without LLVM optimisation: compiles ~10x faster (the jitted init of the LNS
# CNN: 23 s -> 2 s) and every compared run uses it, so the comparison is unaffected.
FAST_COMPILE = "--xla_backend_optimization_level=0"
RTOL, ATOL = 1e-5, 1e-6  # float32 round-off; 2 processes x 1 device vs 1 process x 2 devices
ACCURACY_TOL = 1.5e-4  # at most one of the 10000 MNIST test images


def _flags(workdir: str) -> list[str]:
    flags = ["--config", CONFIG, "--workdir", workdir]
    return flags + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]


def _launch(
    args: list[str], log: str, env: dict, code: str | None = None
) -> tuple[subprocess.Popen, object]:
    out = open(log, "w")  # closed by the caller
    program = ["-c", code] if code else [os.path.join(ROOT, "train.py")]
    proc = subprocess.Popen(
        [sys.executable, *program, *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    return proc, out


def _assert_trees_close(a, b, what: str) -> None:
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL, err_msg=f"{what} {path}"
        )


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1", XLA_FLAGS=FAST_COMPILE)
    for var in ("JAX_NUM_CPU_DEVICES", "JAX_COORDINATOR_ADDRESS"):
        env.pop(var, None)
    return env


def _launch_two(workdir: str, logs: list[str], code: str | None = None):
    """Processes 0 and 1 of a ``jax.distributed`` run of ``train.py`` on loopback."""
    import portpicker

    port = portpicker.pick_unused_port()
    flags = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    return [
        _launch([*_flags(workdir), *flags, f"--process_id={i}"], logs[i], _env(), code)
        for i in (0, 1)
    ]


def _wait(procs) -> list:
    """The exit codes (``"timeout"`` for the first that hangs; all are ended then)."""
    codes, deadline = [], time.monotonic() + TIMEOUT_S
    try:
        for proc, _ in procs:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
        codes.append("timeout")
    finally:
        for proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    return codes


def _build_runs(tmp) -> None:
    two, single = str(tmp / "two"), str(tmp / "single")
    procs = _launch_two(two, [str(tmp / f"process{i}.log") for i in (0, 1)])
    procs.append(
        _launch(_flags(single), str(tmp / "single.log"), {**_env(), "JAX_NUM_CPU_DEVICES": "2"})
    )
    codes = _wait(procs)
    logs = {name: (tmp / f"{name}.log").read_text() for name in ("process0", "process1", "single")}
    assert codes == [0, 0, 0], (codes, {k: v[-3000:] for k, v in logs.items()})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two-process and the single-process run, once per test run (read-only)."""
    tmp = build_once(tmp_path_factory, "multiprocess", _build_runs)
    logs = {name: (tmp / f"{name}.log").read_text() for name in ("process0", "process1", "single")}
    return {"two": str(tmp / "two"), "single": str(tmp / "single"), "logs": logs}


def _config(**extra):
    return load_config_file(CONFIG, {**OVERRIDES, **extra})


def test_two_processes_end_where_one_ends(runs):
    for stage in ("pretrain", "lns"):
        a, meta_a = restore_stage(_config(), runs["two"], stage)  # written by 2 processes
        b, meta_b = restore_stage(_config(), runs["single"], stage)
        assert int(a.step) == int(b.step) == 4 and meta_a["done"] and meta_b["done"]
        _assert_trees_close(a.params, b.params, f"{stage} params")
        _assert_trees_close(a.model_state, b.model_state, f"{stage} model_state")
    two = json.loads(open(os.path.join(runs["two"], "summary.json")).read())
    one = json.loads(open(os.path.join(runs["single"], "summary.json")).read())
    for s2, s1 in zip(two["stages"], one["stages"], strict=True):
        assert s2["steps"] == s1["steps"] == 4
        assert abs(s2["test_accuracy"] - s1["test_accuracy"]) <= ACCURACY_TOL, (s2, s1)


def test_only_process_0_writes(runs):
    records = read_metrics(runs["two"])
    assert [(r["stage"], r["epoch"]) for r in records] == [("pretrain", 1), ("lns", 1)]
    assert os.path.isfile(os.path.join(runs["two"], "config.json"))
    logs = runs["logs"]
    assert "2 device(s), 2 process(es)" in logs["process0"]
    assert "2 device(s), 1 process(es)" in logs["single"]
    assert "final test accuracy" in logs["process0"]
    assert "final test accuracy" not in logs["process1"] and "bnnns:" not in logs["process1"]


def test_train_step_compiled_once_per_stage(runs):
    for name in ("process0", "process1", "single"):
        assert runs["logs"][name].count("Compiling jit(train_step)") == 2, name


def test_two_process_checkpoint_resumes_in_one_process(runs, tmp_path):
    """One more LNS epoch in one process on (a copy of) the 2-process workdir: pretrain is
    loaded as done, LNS continues from the stored step 4 and ends at 8."""
    workdir = str(tmp_path / "resumed")
    shutil.copytree(runs["two"], workdir)
    summary = train_and_evaluate(_config(**{"lns.epochs": 2}), workdir)
    assert [s["steps"] for s in summary["stages"]] == [4, 8]
    lns = summary["stages"][1]
    assert lns["epochs"] == 2
    records = read_metrics(workdir)
    assert [(r["stage"], r["step"]) for r in records] == [("pretrain", 4), ("lns", 4), ("lns", 8)]


# train.py in both processes; process 1 sends itself a real SIGTERM after pretrain step 1. Under
# jax.distributed XLA's preemption notifier takes the signal and both processes stop, save and
# exit at one agreed step.
SIGTERM_SCRIPT = """
import os, runpy, signal, sys
import jax
from bnnns.train import stage

original = stage.Stage.__init__
def init(self, run, name):
    original(self, run, name)
    step_fn = self.train_fn
    def train_fn(state, batch):
        out = step_fn(state, batch)
        if name == "pretrain" and jax.process_index() == 1 and int(out[0].step) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out
    self.train_fn = train_fn
stage.Stage.__init__ = init
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


# Two more two-process runs (about as long as this module's fixture) do not fit the CI budget
# of issue 18: opt in with BNNNS_TEST_MULTIPROCESS_PREEMPTION=1 (passed, docs/reliability.md).
@pytest.mark.skipif(
    os.environ.get("BNNNS_TEST_MULTIPROCESS_PREEMPTION") != "1",
    reason="opt-in (CI budget): BNNNS_TEST_MULTIPROCESS_PREEMPTION=1",
)
def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes(runs, tmp_path):
    """Both exit 75 at one step, saved collectively; the rerun (two processes again) ends with
    the records and weights of the uninterrupted two-process run, bit for bit. (A rerun in one
    process on one device is not comparable this tightly: with sign activations, 1 vs 2
    devices part by round-off, measured 0.3% in the LNS train loss.)"""
    from bnnns.train.preemption import PREEMPTED_EXIT_CODE

    workdir = str(tmp_path / "preempted")
    logs = [str(tmp_path / f"preempted{i}.log") for i in (0, 1)]
    codes = _wait(_launch_two(workdir, logs, SIGTERM_SCRIPT))
    text = [open(log).read() for log in logs]
    assert codes == [PREEMPTED_EXIT_CODE] * 2, (codes, [t[-3000:] for t in text])
    line = [x for x in text[0].splitlines() if x.startswith("bnnns: preempted")]
    assert len(line) == 1 and "[pretrain] saved step" in line[0], text[0][-3000:]
    step = int(line[0].split("saved step ")[1].split()[0])
    ckpt = os.path.join(workdir, "checkpoints", "pretrain")
    assert max(int(p) for p in os.listdir(ckpt) if p.isdigit()) == step
    assert "bnnns: preempted" not in text[1]  # process 0 speaks for the run
    logs = [str(tmp_path / f"rerun{i}.log") for i in (0, 1)]
    codes = _wait(_launch_two(workdir, logs))
    assert codes == [0, 0], (codes, [open(log).read()[-3000:] for log in logs])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(runs["two"])]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(workdir)] == strip
    for stage in ("pretrain", "lns"):
        a, _ = restore_stage(_config(), runs["two"], stage)
        b, _ = restore_stage(_config(), workdir, stage)
        jax.tree.map(np.testing.assert_array_equal, a, b)
