"""SwishSign, IR-Net's EDE and ReActNet's RSign (bnnns.core.estimators): forward values and
gradients against their formulas, with and without jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnnns.core.estimators import ede_schedule, ede_sign, rsign, swish_sign

finite = st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False, width=32)
arrays = hnp.arrays(np.float32, st.sampled_from([(5,), (2, 3)]), elements=finite)


def ref_sign(x):
    return np.where(np.asarray(x, np.float64) >= 0, 1.0, -1.0)


class MoreEstimatorsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_swish_sign(self, dtype=jnp.float32):
        @settings(max_examples=6)
        @given(arrays, st.sampled_from([1.0, 5.0, 10.0]))
        def check(x, beta):
            x = jnp.asarray(x, dtype)
            y = self.variant(lambda x: swish_sign(x, beta))(x)
            self.assertEqual(y.dtype, dtype)
            np.testing.assert_array_equal(np.asarray(y, np.float32), ref_sign(x))
            g = self.variant(jax.grad(lambda x: jnp.sum(swish_sign(x, beta) * 2.0)))(x)
            bx = beta * np.asarray(
                x, np.float64
            )  # d/dx [2 sigmoid(bx)(1 + bx(1 - sigmoid(bx))) - 1]
            want = 2.0 * beta * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))
            np.testing.assert_allclose(np.asarray(g, np.float64), want, atol=1e-5, rtol=1e-4)

        check()

    @chex.variants(with_jit=True, without_jit=True)
    def test_ede_sign_follows_its_schedule(self):
        @settings(max_examples=6)
        @given(arrays, st.floats(0.0, 1.0))
        def check(x, progress):
            t, k = ede_schedule(progress)
            want_t = 0.1 * 10 ** (progress * 2.0)  # T_min 10^(i/N log10(T_max / T_min))
            np.testing.assert_allclose([t, k], [want_t, max(1 / want_t, 1.0)], rtol=1e-5)
            x = jnp.asarray(x)
            y = self.variant(ede_sign)(x, t, k)
            np.testing.assert_array_equal(y, ref_sign(x))
            g = self.variant(jax.grad(lambda x: jnp.sum(ede_sign(x, t, k))))(x)
            want = float(k) * float(t) * (1 - np.tanh(float(t) * np.asarray(x, np.float64)) ** 2)
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)

        check()

    @chex.variants(with_jit=True, without_jit=True)
    def test_rsign_thresholds_per_channel(self):
        @settings(max_examples=6)
        @given(
            hnp.arrays(np.float32, (4, 3), elements=finite),
            hnp.arrays(np.float32, (3,), elements=finite),
        )
        def check(x, a):
            y = self.variant(rsign)(x, a)
            np.testing.assert_array_equal(y, ref_sign(x - a))
            gx, ga = self.variant(jax.grad(lambda x, a: jnp.sum(rsign(x, a) * 3.0), (0, 1)))(x, a)
            surrogate = np.maximum(0.0, 2 - 2 * np.abs(x - a))
            np.testing.assert_allclose(gx, 3.0 * surrogate, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ga, -3.0 * surrogate.sum(0), rtol=1e-5, atol=1e-5)

        check()

    def test_dtype_is_kept(self):
        for fn in (lambda x: swish_sign(x), lambda x: ede_sign(x, *ede_schedule(0.5))):
            x = jnp.array([-1.0, 0.0, 2.0], jnp.bfloat16)
            self.assertEqual(fn(x).dtype, jnp.bfloat16)
            self.assertEqual(
                jax.grad(lambda x, fn=fn: jnp.sum(fn(x)).astype(jnp.float32))(x).dtype, x.dtype
            )

    def test_bad_beta_is_refused(self):
        with pytest.raises(ValueError, match="beta must be > 0"):
            swish_sign(jnp.ones(2), 0.0)


def test_layers_select_the_new_activation_estimators_by_name():
    from helpers import tiny_config

    import bnnns
    from bnnns.errors import ConfigError
    from bnnns.train.config_checks import validate_config

    x = jax.random.normal(jax.random.key(0), (4, 3))
    layer = bnnns.BinaryDense(2, weight_binarizer="real", activation="rsign")
    variables = jax.jit(layer.init)(jax.random.key(1), x)
    variables["params"]["act_threshold"] = jnp.array([0.3, -0.2, 0.0])
    w, a = variables["params"]["kernel"], variables["params"]["act_threshold"]
    np.testing.assert_allclose(layer.apply(variables, x), rsign(x, a) @ w, rtol=1e-6)
    swish = bnnns.BinaryDense(2, weight_binarizer="real", activation="swish_sign")
    grad = jax.grad(lambda x: jnp.sum(swish.apply({"params": {"kernel": w}}, x)))(x)
    want = jax.grad(lambda x: jnp.sum(swish_sign(x, 5.0) @ w))(x)
    np.testing.assert_allclose(grad, want, rtol=1e-6)
    deployed = bnnns.BinaryDense(
        2, weight_binarizer="deployed", activation="rsign", weight_scale="none"
    )
    bits = jnp.where(w >= 0, 1, -1).astype(jnp.int8)  # the threshold is applied before the sign
    binary = {"bits": bits, "scale": jnp.ones(())}
    a = jnp.median(x, axis=0)  # half of each channel's inputs flip sign against a = 0
    assert bool(jnp.any(rsign(x, a) != bnnns.sign(x)))
    got = deployed.apply({"params": {"act_threshold": a}, "binary": binary}, x)
    np.testing.assert_array_equal(got, rsign(x, a) @ bits.astype(jnp.float32))
    validate_config(tiny_config(**{"binary.activation": "swish_sign"}))
    with pytest.raises(ConfigError, match="binary.activation"):
        validate_config(tiny_config(**{"binary.activation": "ede"}))
