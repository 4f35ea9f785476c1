"""The pretrained BNN is really what ``finetune`` and ``lns`` start from (method.md §3.2,
:func:`bnnns.train.stage_init.transfer_pretrained`), and D1's ``"pretrained"`` labels are the
signs of the transferred weights: a stage that re-initialised instead fails here.

No step is trained: a pretrain checkpoint with random weights and BatchNorm statistics (unlike
any fresh init) is written to a workdir, read back as ``config.init_from`` does and handed to
each stage's start (:func:`bnnns.train.resume.start`, which a run calls)."""

import jax
import numpy as np
import pytest
from flax import traverse_util
from helpers import tiny_config

from bnnns.train import resume, sharding, train_lib
from bnnns.train.metric_writer import MetricWriter
from bnnns.train.stage import Run, Stage


def tiny_npz(path):
    """64 training and 16 test images of 8x8, 10 classes."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (80, 8, 8), dtype=np.uint8)
    y = np.arange(80) % 10
    np.savez(path, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    return f"npz:{path}"


def make_run(config, workdir):
    splits, info = train_lib.load_data(config)
    mesh = sharding.make_mesh(config.mesh_shape)
    return Run(config, str(workdir), splits, info, mesh, MetricWriter(str(workdir), False), ())


def flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree))


def randomized(tree, seed, positive=False):
    """``tree`` with random values (positive ones: BatchNorm variances stay valid)."""
    leaves, treedef = jax.tree.flatten(jax.device_get(tree))
    rng = np.random.default_rng(seed)
    draw = (lambda s: rng.random(s) + 0.5) if positive else rng.standard_normal
    return treedef.unflatten([draw(a.shape).astype(a.dtype) for a in leaves])


@pytest.mark.slow
def test_pretrained_weights_are_carried_into_finetune_and_lns(tmp_path):
    """Each later stage starts from exactly the pretrained parameters and BatchNorm statistics
    (LNS: plus its fresh mapping networks, after the warm start that moves only them), with a
    reset optimizer; LNS's frozen labels (``lns.labels="pretrained"``) are ``sign`` of the
    pretrained kernels."""
    dataset = tiny_npz(tmp_path / "tiny.npz")
    config = tiny_config(dataset=dataset, batch_size=32, train_subset=0)
    config.lns.update(labels="pretrained", warmup_steps=25)
    pre_stage = Stage(make_run(config, tmp_path / "pre"), "pretrain")
    state = pre_stage.init_fn(jax.random.key(7), pre_stage.run.dummy_input())
    state = state.replace(
        params=randomized(state.params, 1),
        model_state=randomized(state.model_state, 2, positive=True),
    )
    pre_stage.checkpointer.save(16, state, {"stage": "pretrain", "done": True, "history": []})
    pre_stage.checkpointer.close()

    run = make_run(config, tmp_path / "run")
    pretrained = train_lib._load_pretrained(run, str(tmp_path / "pre"))  # config.init_from
    want, stats = flat(state.params), flat(state.model_state["batch_stats"])
    assert stats  # the model has BatchNorm statistics to carry
    starts = {}
    for name in ("finetune", "lns"):
        stage = Stage(run, name)
        start, meta, done = resume.start(stage, pretrained)
        stage.checkpointer.close()
        assert not done and int(start.step) == 0, name  # fresh optimizer, transferred weights
        starts[name] = start
        got = flat(start.params)
        mapping = {k for k in got if "mapping" in k}
        assert bool(mapping) == (name == "lns"), name
        assert set(got) - mapping == set(want), name
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key}")
        got_stats = flat(start.model_state["batch_stats"])
        for key, value in stats.items():
            np.testing.assert_array_equal(got_stats[key], value, err_msg=f"{name} {key}")
    assert meta["warm_start"]["steps"] >= 25  # the LNS start ran its warm start
    labels = flat(starts["lns"].model_state["lns_labels"])
    assert len(labels) == 3  # one per LNS conv
    for key, q_tilde in labels.items():
        kernel = want[(*key[:-1], "kernel")]
        assert q_tilde.dtype == np.int8 and 0 < np.mean(kernel >= 0) < 1
        np.testing.assert_array_equal(q_tilde, np.where(kernel >= 0, 1, -1), err_msg=str(key))
