"""Many seeds in one program (``config.num_seeds``, bnnns.train.seeds): replica ``s`` of an
S-seed run equals the single run of seed ``config.seed + s`` up to float32 round-off."""

import functools
import json
import os

import jax
import numpy as np
import optax
import pytest
from helpers import tiny_config

from bnnns.deploy import export
from bnnns.train.metric_writer import read_metrics
from bnnns.train.seeds import multi_seed_step, seed_workdir, stack, unstack
from bnnns.train.stage import build_model
from bnnns.train.stage_init import fresh_state
from bnnns.train.steps import train_step
from bnnns.train.train_lib import restore_stage, train_and_evaluate

pytestmark = pytest.mark.filterwarnings("ignore:Sharding info not provided")
RTOL, ATOL = 1e-5, 1e-6
# Real activations, as in tests/test_sharding.py: the vmapped convolutions sum in another order,
# and with sign activations a BatchNorm output within ~1e-7 of 0 may take the other sign (the
# runs then part like two seeds would: a grad-norm difference of 5e-5 at the first step).
REAL = {"binary.activation": "none"}


def assert_close(a, b):
    """Equal to ``RTOL`` relative to each leaf's largest value (as tests/test_sharding.py)."""
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        scale = max(float(np.max(np.abs(y), initial=0.0)), ATOL)
        np.testing.assert_allclose(x, y, rtol=0, atol=RTOL * scale, err_msg=str(path))


def test_vmapped_lns_step_equals_single_steps():
    """Three steps of 3 replicas of the LNS model (own init, own batches) in one vmapped step
    against each replica's own steps: parameters (W, the mapping networks' theta), BatchNorm
    statistics, optimizer state and metrics. (The sign model: the run-level test below.)"""
    model = build_model(tiny_config(**REAL), 10, "lns")
    tx = optax.sgd(0.05, momentum=0.9)  # not Adam: its first step is lr * sign(round-off)
    dummy = np.zeros((1, 28, 28, 1), np.float32)
    init = jax.jit(functools.partial(fresh_state, model, tx))
    states = [init(jax.random.key(s), dummy) for s in range(3)]
    rng = np.random.default_rng(0)
    batches = [
        [
            {
                "image": rng.normal(size=(16, 28, 28, 1)).astype(np.float32),
                "label": rng.integers(0, 10, 16).astype(np.int32),
                "mask": np.ones(16, np.float32),
            }
            for _ in range(3)
        ]
        for _ in range(3)
    ]
    single = jax.jit(functools.partial(train_step, model=model, tx=tx, alpha=1.0))
    multi = jax.jit(functools.partial(multi_seed_step, model=model, tx=tx, alpha=1.0))
    stacked = stack(states)
    for step in range(3):
        stacked, metrics = multi(stacked, stack([batches[s][step] for s in range(3)]))
        for s in range(3):
            states[s], expected = single(states[s], batches[s][step])
            assert_close(unstack(metrics, s), expected)
    for s in range(3):
        assert_close(unstack(stacked, s), states[s])
    # the replicas really are independent: different inits, different results
    assert not np.allclose(*[jax.tree.leaves(unstack(stacked, s).params)[0] for s in (0, 1)])


def test_a_multi_seed_run_that_raises_leaves_its_saves_finished(tmp_path):
    """A callback error ends the run only after every seed's save in flight is finished (a
    rerun in the same process must not meet a half-written or half-deleted step)."""

    def crash(record):
        if record["seed"] == 1:
            raise RuntimeError("callback failed")

    config = tiny_config(
        num_seeds=2, stages="pretrain", checkpoint_every_steps=3, **{"pretrain.epochs": 1}
    )
    with pytest.raises(RuntimeError, match="callback failed"):
        train_and_evaluate(config, str(tmp_path), callbacks=[crash])
    for s in range(2):  # steps 3, 6, 8 saved, the newest 2 kept
        ckpt = os.path.join(seed_workdir(str(tmp_path), s), "checkpoints", "pretrain")
        assert sorted(os.listdir(ckpt)) == ["6", "8"], s


@pytest.mark.slow
def test_seed_s_of_a_multi_seed_run_equals_the_single_run(tmp_path):
    """Seed 1 of a 2-seed run of one pretrain epoch against the single run of seed 1 (the
    config's seed + 1: own init and data order): weights to float32 round-off, the same test
    accuracy; its workdir is a single run's (restore, export --seed)."""
    overrides = {"stages": "pretrain", "pretrain.epochs": 1, "seed": 3, **REAL}
    multi = tmp_path / "multi"
    summary = train_and_evaluate(tiny_config(num_seeds=2, **overrides), str(multi))
    single = tmp_path / "single"
    train_and_evaluate(tiny_config(**{**overrides, "seed": 4}), str(single))
    assert summary["seeds"] == [3, 4]
    one = json.loads((single / "summary.json").read_text())
    with open(os.path.join(seed_workdir(str(multi), 1), "summary.json")) as f:
        replica = json.load(f)
    assert replica["test_accuracy"] == one["test_accuracy"] == summary["test_accuracy_per_seed"][1]
    assert summary["test_accuracy_per_seed"][0] != summary["test_accuracy_per_seed"][1]
    a, _ = restore_stage(tiny_config(**{**overrides, "seed": 4}), str(single), "pretrain")
    b, _ = restore_stage(
        tiny_config(**{**overrides, "seed": 4}), seed_workdir(str(multi), 1), "pretrain"
    )
    assert_close(b, a)
    records = read_metrics(seed_workdir(str(multi), 1))
    expected = read_metrics(str(single))
    assert [r["step"] for r in records] == [r["step"] for r in expected] == [8]
    np.testing.assert_allclose(records[0]["train_loss"], expected[0]["train_loss"], rtol=1e-5)
    out = tmp_path / "seed1.bnn"
    assert export.main([str(multi), "--seed", "1", "--out", str(out)]) == 0
    assert os.path.getsize(out) > 0
    assert export.main([str(multi), "--seed", "2", "--out", str(out)]) == 2
