"""Small configs for fast training tests; expensive fixtures built once per test run."""

import fcntl
import os
import shutil
import subprocess
import sys

from hypothesis import strategies as st

from bnnns.train.default_config import base_config

# Convolution paddings for hypothesis: the two names and explicit (lo, hi) pairs of 0-2.
CONV_PADDINGS = st.one_of(
    st.sampled_from(["SAME", "VALID"]),
    st.tuples(
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
    ),
)


def tiny_config(**overrides):
    """A seconds-long MNIST pipeline: width-4 CNN, 512 training images, batch 64; evaluated on
    the first 2,000 test (and validation) images."""
    c = base_config()
    c.dataset = "mnist"
    c.stages = "pretrain,lns"
    c.model.update(name="cnn", width=4)
    c.train_subset = 512
    c.batch_size = 64
    c.eval_batch_size = 2000
    c.eval_subset = 2000  # of MNIST's 10,000 test images (and of any validation split)
    c.pretrain.update(epochs=2, optimizer="adam", learning_rate=2e-3, schedule="cosine")
    c.finetune.update(epochs=1, optimizer="adam", learning_rate=1e-4, schedule="cosine")
    c.lns.update(epochs=2, optimizer="adam", learning_rate=1e-4, schedule="cosine", decay_epochs=())
    c.lns.warmup_steps = 400
    c.progress_bar = False
    c.log_every_steps = 4
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def build_once(tmp_path_factory, name, build):
    """The directory ``name``, filled by ``build(path)`` once per test run, not once per xdist
    worker: the workers of one run share the parent of their base temporary directories
    (pytest-xdist's recipe), and the first to ask builds it under an exclusive ``flock`` while
    the others wait and then read it. What it holds is read-only for the tests (copy it to
    change it). A build that fails leaves no result: the next worker tries again, and fails
    with its own traceback."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    target, done = shared / f"once-{name}", shared / f"once-{name}.done"
    with open(shared / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            build(target)
            done.touch()
    return target


def run_optimized(args, **kwargs):
    """``subprocess.run([python, *args])`` without the tests' ``XLA_FLAGS`` (conftest.py's
    ``--xla_backend_optimization_level=0``), for the few tests whose time is running XLA's code,
    not compiling it (real-MNIST training: 93 s at level 0 against 42 s optimised, alone on a
    2-core EPYC). The child can import ``helpers`` (``PYTHONPATH`` gets this folder)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([sys.executable, *args], env=env, **kwargs)
