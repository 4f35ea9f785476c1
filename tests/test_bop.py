"""Bop (Helwegen et al. 2019; bnnns.train.bop): its flips against Algorithm 1, its routing."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from helpers import tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bnnns
from bnnns.errors import ConfigError
from bnnns.train.bop import binary_kernel_pattern, bop, bop_labels, with_bop
from bnnns.train.config_checks import validate_config
from bnnns.train.optim import make_optimizer

values = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False, width=32)
signs = hnp.arrays(np.float32, (6,), elements=st.sampled_from([-1.0, 1.0]))
grads = hnp.arrays(np.float32, (3, 6), elements=values)  # three steps of gradients


def reference_bop(w, gs, tau, gamma):
    """Algorithm 1 of Helwegen et al. (2019), step by step in numpy."""
    w, m = np.array(w, np.float32), np.zeros_like(w, np.float32)
    for g in gs:
        m = (1 - gamma) * m + gamma * g
        flip = (np.abs(m) > tau) & (np.sign(m) == np.where(w >= 0, 1.0, -1.0))
        w = np.where(flip, -w, w)
    return w, m


class BopTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_flips_follow_algorithm_1(self):
        @settings(max_examples=10)
        @given(signs, grads, st.sampled_from([1e-8, 0.05, 0.3]), st.sampled_from([1e-3, 0.5, 1]))
        def check(w, gs, tau, gamma):
            tx = bop(tau, gamma)
            params, state = jnp.asarray(w), tx.init(jnp.asarray(w))
            step = self.variant(lambda g, s, p: tx.update(g, s, p))
            for g in gs:
                updates, state = step(jnp.asarray(g), state, params)
                params = optax.apply_updates(params, updates)
            ref_w, ref_m = reference_bop(w, gs, tau, gamma)
            np.testing.assert_allclose(state.m, ref_m, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(params, ref_w)

        check()

    def test_rejects_bad_hyperparameters_and_missing_params(self):
        with pytest.raises(ValueError, match="threshold"):
            bop(threshold=0.0)
        with pytest.raises(ValueError, match="gamma"):
            bop(gamma=1.5)
        tx = bop()
        with pytest.raises(ValueError, match="needs params"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def _binary_mlp_params():
    layer = bnnns.BinaryDense(3, activation="none")
    x = jnp.ones((2, 4))
    params = layer.init(jax.random.key(0), x)["params"]
    return {"binary": params, "head": {"bias": jnp.ones(3)}}


class RoutingTest(parameterized.TestCase):
    def test_bop_flips_the_matched_kernels_and_sgd_trains_the_rest(self):
        params = _binary_mlp_params()
        tx = with_bop(optax.sgd(0.1), r"^binary/kernel$", threshold=1e-8, gamma=1.0)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        w = params["binary"]["kernel"]
        # gradient +1 everywhere: exactly the positive weights flip
        np.testing.assert_array_equal(new["binary"]["kernel"], jnp.where(w >= 0, -w, w))
        np.testing.assert_allclose(new["head"]["bias"], 0.9 * jnp.ones(3))

    def test_a_pattern_that_matches_nothing_names_itself(self):
        params = _binary_mlp_params()
        with pytest.raises(ValueError, match=r"'\^conv/kernel\$' matches no parameter"):
            with_bop(optax.sgd(0.1), r"^conv/kernel$").init(params)
        self.assertEqual(bop_labels(params, "bias")["head"]["bias"], "bop")

    def test_pattern_of_a_model_matches_its_binary_kernels_only(self):
        model = _TinyModel()
        x = jnp.ones((1, 4, 4, 2))
        pattern = binary_kernel_pattern(model, x, train=False)
        init = functools.partial(model.init, train=False)
        variables = jax.eval_shape(init, jax.random.key(0), x)  # the tree only: no compute
        labels = jax.tree_util.tree_flatten_with_path(bop_labels(variables["params"], pattern))[0]
        bop_paths = {"/".join(k.key for k in p) for p, label in labels if label == "bop"}
        self.assertEqual(bop_paths, {"conv/kernel", "block/dense/kernel"})


class _TinyModel(nn.Module):
    """A real stem, an LNS conv (its mapping's kernels must not match), a nested binary dense."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(2, name="stem")(x)
        x = bnnns.BinaryConv(2, weight_binarizer="lns", name="conv")(x)
        return _Block(name="block")(x.reshape(x.shape[0], -1))


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(bnnns.BinaryDense(3, name="dense")(x))


class BopConfigTest(parameterized.TestCase):
    def test_make_optimizer_builds_bop_for_pretrain(self):
        config = tiny_config(**{"pretrain.optimizer": "bop", "pretrain.bop_gamma": 1.0})
        params = _binary_mlp_params()
        tx = make_optimizer(config.pretrain, 10, bop_pattern=r"^binary/kernel$")
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        w = params["binary"]["kernel"]
        np.testing.assert_array_equal(updates["binary"]["kernel"], jnp.where(w >= 0, -2 * w, 0))
        with pytest.raises(ValueError, match="bop_pattern"):
            make_optimizer(config.pretrain, 10)

    @parameterized.parameters(
        ({"lns.optimizer": "bop"}, "lns.optimizer"),
        ({"pretrain.optimizer": "bop", "pretrain.bop_tau": 0.0}, "pretrain.bop_tau"),
        ({"pretrain.optimizer": "bop", "pretrain.bop_gamma": 2.0}, "pretrain.bop_gamma"),
    )
    def test_config_checks(self, overrides, field):
        with pytest.raises(ConfigError, match=field):
            validate_config(tiny_config(**overrides))

    def test_bop_config_is_valid(self):
        validate_config(tiny_config(**{"pretrain.optimizer": "bop"}))
