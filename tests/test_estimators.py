"""Property tests of the sign estimators (method.md §6.1, D9, D10) and weight scales (D8)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bnnns

DTYPES = (jnp.float32, jnp.bfloat16)

# XLA on CPU flushes subnormals to zero (sign = +1), so they are left out of the inputs.
finite = st.floats(-4.0, 4.0, allow_nan=False, allow_subnormal=False, width=32)
arrays = hnp.arrays(np.float32, st.sampled_from([(7,), (3, 5), (2, 3, 4)]), elements=finite)
clips = st.sampled_from([0.5, 1.0, 2.0])


def ref_sign(x):
    return np.where(np.asarray(x, np.float32) >= 0, 1.0, -1.0)


class EstimatorTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_ste_sign_values_and_grad(self, dtype):
        @given(arrays, clips)
        def check(x, clip):
            x = jnp.asarray(x, dtype)
            fwd = self.variant(lambda x: bnnns.ste_sign(x, clip))
            y = fwd(x)
            self.assertEqual(y.dtype, dtype)
            np.testing.assert_array_equal(np.asarray(y, np.float32), ref_sign(x))
            g = self.variant(jax.grad(lambda x: jnp.sum(bnnns.ste_sign(x, clip) * 3.0)))(x)
            xf = np.asarray(x, np.float32)
            np.testing.assert_array_equal(np.asarray(g, np.float32), 3.0 * (np.abs(xf) <= clip))

        check()

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_identity_ste(self, dtype):
        @given(arrays)
        def check(x):
            x = jnp.asarray(x, dtype)
            g = self.variant(jax.grad(lambda x: jnp.sum(bnnns.ste_sign(x, None) * x)))(x)
            # d/dx [sign(x) * x] with identity STE = x + sign(x)
            expected = np.asarray(x, np.float32) + ref_sign(x)
            np.testing.assert_allclose(np.asarray(g, np.float32), expected, rtol=1e-2, atol=1e-2)

        check()

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*DTYPES)
    def test_approx_sign_matches_surrogate_derivative(self, dtype):
        def surrogate(x):  # Bi-Real's F(x), method.md §6.1
            return jnp.where(
                x < -1, -1.0, jnp.where(x < 0, 2 * x + x**2, jnp.where(x < 1, 2 * x - x**2, 1.0))
            )

        @given(arrays)
        def check(x):
            x = jnp.asarray(x, dtype)
            y = self.variant(bnnns.approx_sign)(x)
            self.assertEqual(y.dtype, dtype)
            np.testing.assert_array_equal(np.asarray(y, np.float32), ref_sign(x))
            g = self.variant(jax.grad(lambda x: jnp.sum(bnnns.approx_sign(x))))(x)
            x32 = jnp.asarray(x, jnp.float32)
            g_ref = jax.vmap(jax.grad(surrogate))(x32.reshape(-1)).reshape(x.shape)
            np.testing.assert_allclose(np.asarray(g, np.float32), g_ref, atol=2e-2)

        check()

    def test_sign_of_zero_is_plus_one(self):
        for fn in (bnnns.sign, bnnns.ste_sign, bnnns.approx_sign):
            self.assertEqual(float(fn(jnp.zeros(()))), 1.0)
            self.assertEqual(float(fn(-jnp.zeros(()))), 1.0)

    def test_clip_boundary_is_inclusive(self):
        g = jax.grad(lambda x: jnp.sum(bnnns.ste_sign(x, 1.0)))(jnp.array([-1.0, 1.0, 1.0001]))
        np.testing.assert_array_equal(g, [1.0, 1.0, 0.0])

    def test_bad_clip_raises(self):
        with pytest.raises(ValueError, match="clip"):
            bnnns.ste_sign(jnp.ones(3), clip=0.0)


class ScaleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_scales(self):
        @given(hnp.arrays(np.float32, (3, 3, 2, 4), elements=finite))
        def check(w):
            layer = self.variant(lambda w: bnnns.weight_scale(w, "layer"))(w)
            np.testing.assert_allclose(layer, np.mean(np.abs(w)), rtol=1e-5)
            chan = self.variant(lambda w: bnnns.weight_scale(w, "channel"))(w)
            self.assertEqual(chan.shape, (1, 1, 1, 4))
            np.testing.assert_allclose(chan[0, 0, 0], np.abs(w).mean((0, 1, 2)), rtol=1e-5)
            grad = jax.grad(lambda w: jnp.sum(bnnns.weight_scale(w, "channel")))(w)
            np.testing.assert_array_equal(grad, np.zeros_like(w))  # stop-gradient (D8)

        check()

    def test_bad_mode(self):
        with pytest.raises(ValueError, match="mode must be one of"):
            bnnns.weight_scale(jnp.ones((2, 2)), "filter")
