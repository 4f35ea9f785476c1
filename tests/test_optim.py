"""Optimizer plumbing of the LNS protocol: per-parameter lr of theta (mapping_lr_scale)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnns.train.default_config import optimization
from bnnns.train.optim import make_optimizer, mapping_lr_scales, parse_lr_scale


def params():
    return {
        "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "mapping": {"Conv_0": {"kernel": jnp.ones(5)}}},
        "dense": {"kernel": jnp.ones((6, 2)), "mapping": {"Conv_0": {"kernel": jnp.ones(3)}}},
        "head": {"bias": jnp.ones(2)},
    }


def test_scales_touch_only_the_mapping_networks():
    s = mapping_lr_scales(params(), "1/N")
    assert s["conv"]["kernel"] == s["dense"]["kernel"] == s["head"]["bias"] == 1.0
    assert s["conv"]["mapping"]["Conv_0"]["kernel"] == pytest.approx(1 / 72)
    assert s["dense"]["mapping"]["Conv_0"]["kernel"] == pytest.approx(1 / 12)
    s = mapping_lr_scales(params(), 0.25)
    assert s["dense"]["mapping"]["Conv_0"]["kernel"] == 0.25 and s["conv"]["kernel"] == 1.0


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("scale", [0.0, 0.1, "1/N"])
def test_scaled_step_equals_a_per_parameter_learning_rate(name, scale):
    """Three steps with scales equal, leaf by leaf, three steps at lr * scale."""
    p = params()
    grads = jax.tree.map(lambda x: jnp.linspace(-1.0, 2.0, x.size).reshape(x.shape), p)
    scales = mapping_lr_scales(p, scale)
    opt = optimization(optimizer=name, learning_rate=0.1, schedule="constant", momentum=0.9)
    tx = make_optimizer(opt, 10, scales)
    state, got = tx.init(p), p
    for _ in range(3):
        updates, state = tx.update(grads, state, got)
        got = jax.tree.map(jnp.add, got, updates)
    leaves, treedef = jax.tree.flatten(p)
    for leaf, g, s, out in zip(
        leaves,
        treedef.flatten_up_to(grads),
        treedef.flatten_up_to(scales),
        treedef.flatten_up_to(got),
        strict=True,
    ):
        ref_opt = optimization(
            optimizer=name, learning_rate=0.1 * s, schedule="constant", momentum=0.9
        )
        ref_tx = make_optimizer(ref_opt, 10)
        ref_state, ref = ref_tx.init(leaf), leaf
        for _ in range(3):
            u, ref_state = ref_tx.update(g, ref_state, ref)
            ref = ref + u
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)


def test_parse_lr_scale():
    assert parse_lr_scale("1") == 1.0 and parse_lr_scale(0.5) == 0.5
    assert parse_lr_scale("1/N") == "1/N"
    for bad in ("-0.1", "nan", "inf", "fast", None):
        assert parse_lr_scale(bad) is None


def test_lns_lr_scales_of_a_config():
    """What the LNS stage (bnnns.train.stage) and bnnns.bench.stability build their optimizer
    with."""
    from flax import traverse_util
    from helpers import tiny_config

    from bnnns.train.train_lib import build_model, lns_lr_scales

    dummy = jnp.zeros((1, 28, 28, 1))
    config = tiny_config(**{"lns.mapping_lr_scale": "1"})
    model = build_model(config, 10, "lns")
    assert lns_lr_scales(config, model, dummy) is None  # Algorithm 1: one lr
    config.lns.mapping_lr_scale = "0.5"
    flat = traverse_util.flatten_dict(lns_lr_scales(config, model, dummy))
    mapping = {k: v for k, v in flat.items() if "mapping" in k}
    assert mapping and set(mapping.values()) == {0.5}
    assert {v for k, v in flat.items() if k not in mapping} == {1.0}
