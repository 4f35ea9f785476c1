"""Tests of the mapping network f_theta (Eq. 4; method.md §2, D5, D6)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import bnnns
from bnnns.mapping import filters_to_kernel, kernel_to_filters

KERNELS = {"conv": (3, 3, 4, 6), "conv5x5": (5, 5, 3, 4), "dense": (8, 5)}


def init_apply(shape, residual=False, seed=0):
    kernel = jax.random.normal(jax.random.key(seed), shape)
    net = bnnns.MappingNet(residual=residual)
    params = net.init(jax.random.key(seed + 1), kernel)
    return net, params, kernel


class MappingNetTest(chex.TestCase):
    @parameterized.named_parameters(*KERNELS.items())
    def test_shape_and_dtype(self, shape):
        net, params, kernel = init_apply(shape)
        out = net.apply(params, kernel)
        chex.assert_shape(out, shape)
        self.assertEqual(out.dtype, kernel.dtype)
        chex.assert_tree_all_finite(out)
        out16 = net.apply(params, kernel.astype(jnp.bfloat16))
        self.assertEqual(out16.dtype, jnp.bfloat16)

    @parameterized.named_parameters(*KERNELS.items())
    def test_pure_without_mutable_collections(self, shape):
        net, params, kernel = init_apply(shape)
        self.assertEqual(set(params), {"params"})  # D5: nothing but parameters
        first = net.apply(params, kernel)
        again = net.apply(params, kernel)
        jitted = jax.jit(net.apply)(params, kernel)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_allclose(first, jitted, rtol=1e-5, atol=1e-5)

    @parameterized.parameters(1, 3, 16)
    def test_parameter_count(self, c):
        _, params, _ = init_apply((3, 3, c, 5))
        n = sum(p.size for p in jax.tree.leaves(params))
        conv_weights = 72 * c * c  # 9 (c*2c + 2c*2c + 2c*c)
        biases = 2 * c + 2 * c + c
        norms = 2 * (2 * c) + 2 * (2 * c)
        self.assertEqual(n, conv_weights + biases + norms)

    def test_each_output_depends_on_its_own_filter(self):
        net, params, kernel = init_apply((3, 3, 2, 4))
        j = 1  # output filter j against input filter j
        jac = jax.jacobian(lambda k: net.apply(params, k)[..., j])(kernel)[..., j]
        jac = np.asarray(jac).reshape(18, 18)  # (kh*kw*c_in) x (kh*kw*c_in)
        off_diagonal = jac[~np.eye(18, dtype=bool)]
        self.assertGreater(np.mean(np.abs(off_diagonal) > 1e-6), 0.5)
        self.assertTrue(np.all(np.abs(np.diag(jac)) > 0) or np.mean(np.abs(np.diag(jac)) > 0) > 0.5)

    @parameterized.named_parameters(*KERNELS.items())
    def test_permuting_filters_permutes_outputs(self, shape):
        net, params, kernel = init_apply(shape)
        perm = np.random.default_rng(0).permutation(shape[-1])
        out = net.apply(params, kernel)
        out_perm = net.apply(params, kernel[..., perm])
        np.testing.assert_allclose(out_perm, out[..., perm], rtol=1e-4, atol=1e-5)

    @parameterized.named_parameters(*KERNELS.items())
    def test_residual_variant_starts_at_identity(self, shape):
        net, params, kernel = init_apply(shape, residual=True)
        np.testing.assert_array_equal(net.apply(params, kernel), kernel)
        grads = jax.grad(lambda p: jnp.sum(net.apply(p, kernel) ** 2))(params)
        self.assertGreater(float(jnp.abs(grads["params"]["Conv_2"]["kernel"]).sum()), 0)

    def test_scale_invariance_of_plain_mapping(self):
        """Conv then FilterBankNorm removes the input scale: f(aW) ~= f(W) for a > 0 (up to eps)."""
        net, params, kernel = init_apply((3, 3, 4, 6))
        for a in (0.5, 4.0):
            np.testing.assert_allclose(
                net.apply(params, a * kernel), net.apply(params, kernel), rtol=2e-3, atol=2e-3
            )

    def test_layout_round_trip(self):
        for shape in KERNELS.values():
            k = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
            np.testing.assert_array_equal(filters_to_kernel(kernel_to_filters(k), k.ndim), k)
        k = jnp.arange(2 * 2 * 3 * 5.0).reshape(2, 2, 3, 5)
        np.testing.assert_array_equal(kernel_to_filters(k)[4, 1, 0, 2], k[1, 0, 2, 4])

    def test_bad_kernel_rank(self):
        with pytest.raises(ValueError, match="conv kernel"):
            bnnns.MappingNet().init(jax.random.key(0), jnp.ones((3, 3, 4)))
