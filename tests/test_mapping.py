"""Tests of the mapping network f_theta (Eq. 4; method.md §2, D5, D6)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import bnnns
from bnnns.core import mapping
from bnnns.core.mapping import (
    ReferenceMappingNet,
    drop_prenorm_biases,
    filters_to_kernel,
    kernel_to_filters,
    same_conv,
    valid_taps_conv,
)
from bnnns.train.config_checks import ConfigError, validate_config
from bnnns.train.default_config import base_config

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
        biases = c  # the last conv only: the two before FilterBankNorm have none
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


# -- the valid-taps conv and the cheaper MappingNet: the same function ------------------------


def _close(a, b, tol=1e-4):
    """``|a - b| <= tol * (1 + max|b|)``: float32 summation order only."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * (1.0 + np.max(np.abs(b))))


class ValidTapsConvTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @settings(max_examples=6)  # each example compiles (jit) or dispatches 20-50 ops (eager)
    @given(
        n=st.integers(1, 4),
        h=st.integers(1, 5),
        w=st.integers(1, 5),
        c_in=st.integers(1, 5),
        c_out=st.integers(1, 5),
        kernel=st.sampled_from([(3, 3), (1, 1), (5, 5), (3, 1)]),
        seed=st.integers(0, 2**16),
    )
    def test_equals_same_conv_forward_and_gradients(self, n, h, w, c_in, c_out, kernel, seed):
        kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
        x = jax.random.normal(kx, (n, h, w, c_in))
        k = jax.random.normal(kw, (*kernel, c_in, c_out))
        g = jax.random.normal(kg, (n, h, w, c_out))
        _close(self.variant(valid_taps_conv)(x, k), same_conv(x, k))

        def vjp(conv):
            return jax.grad(lambda x, k: jnp.sum(conv(x, k) * g), argnums=(0, 1))

        got, want = self.variant(vjp(valid_taps_conv))(x, k), vjp(same_conv)(x, k)
        for a, b in zip(got, want, strict=True):  # wrt the input and wrt the kernel
            _close(a, b)

    def test_bfloat16_inputs_give_bfloat16(self):
        x = jnp.ones((2, 3, 3, 4), jnp.bfloat16)
        self.assertEqual(valid_taps_conv(x, jnp.ones((3, 3, 4, 2), jnp.bfloat16)).dtype, x.dtype)


class CheaperMappingNetTest(chex.TestCase):
    @parameterized.named_parameters(*KERNELS.items())
    def test_valid_taps_equals_plain_conv(self, shape):
        """Same parameters, same q^ and the same gradients wrt theta and W (D6)."""
        _, params, kernel = init_apply(shape)
        self.assertEqual(bnnns.MappingNet().conv_impl, "auto")  # the default
        plain = bnnns.MappingNet(conv_impl="conv")
        g = jax.random.normal(jax.random.key(5), shape)

        def grads(m):
            return jax.grad(lambda p, k: jnp.sum(m.apply(p, k) * g), argnums=(0, 1))

        want = grads(plain)(params, kernel)
        for impl in ("valid_taps", "auto"):
            net = bnnns.MappingNet(conv_impl=impl)
            chex.assert_trees_all_equal_shapes(params, net.init(jax.random.key(1), kernel))
            _close(net.apply(params, kernel), plain.apply(params, kernel))
            got = grads(net)(params, kernel)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                _close(a, b)

    def test_auto_picks_valid_taps_for_wide_convs_and_1x1_images(self):
        wide = (jnp.ones((2, 3, 3, 128)), jnp.ones((3, 3, 128, 256)))
        narrow = (jnp.ones((2, 3, 3, 8)), jnp.ones((3, 3, 8, 16)))
        one = (jnp.ones((2, 1, 1, 8)), jnp.ones((3, 3, 8, 16)))

        def convs(args):
            return str(jax.make_jaxpr(mapping.auto_conv)(*args)).count("conv_general_dilated")

        self.assertEqual([convs(wide), convs(narrow), convs(one)], [0, 1, 0])

    @parameterized.named_parameters(*KERNELS.items())
    def test_prenorm_biases_cannot_change_the_output(self, shape):
        """The pre-issue-11 network (biases before FilterBankNorm, plain conv) with random
        biases computes what the converted, bias-free network computes."""
        kernel = jax.random.normal(jax.random.key(0), shape)
        ref = ReferenceMappingNet()
        old = ref.init(jax.random.key(1), kernel)
        fresh = bnnns.MappingNet().init(jax.random.key(1), kernel)  # the same initial theta
        chex.assert_trees_all_equal(drop_prenorm_biases({"mapping": old["params"]})["mapping"],
                                    fresh["params"])  # fmt: skip
        keys = iter(jax.random.split(jax.random.key(2), 8))
        old = jax.tree_util.tree_map_with_path(
            lambda path, x: (
                x + jax.random.normal(next(keys), x.shape) if path[-1].key == "bias" else x
            ),
            old,
        )
        new = {"params": drop_prenorm_biases({"mapping": old["params"]})["mapping"]}
        self.assertEqual(set(new["params"]["Conv_0"]), {"kernel"})
        self.assertEqual(set(new["params"]["Conv_2"]), {"kernel", "bias"})
        without = jax.tree_util.tree_map_with_path(
            lambda path, x: (
                jnp.zeros_like(x)
                if path[-1].key == "bias" and path[-2].key in ("Conv_0", "Conv_1")
                else x
            ),
            old,
        )
        want = ref.apply(old, kernel)
        _close(ref.apply(without, kernel), want)  # the claim itself, on the old network
        for impl in ("valid_taps", "conv"):
            _close(bnnns.MappingNet(conv_impl=impl).apply(new, kernel), want)

    def test_converter_drops_the_biases_from_a_model_and_its_optimizer_state(self):
        layer = bnnns.BinaryConv(4, weight_binarizer="lns")
        x = jnp.ones((1, 5, 5, 3))
        params = bnnns.nn.layers.drop_sown(layer.init(jax.random.key(0), x))["params"]
        old = {"block": {**params, "mapping": ReferenceMappingNet().init(
            jax.random.key(1), params["kernel"])["params"]}}  # fmt: skip
        opt_state = optax.sgd(0.1, momentum=0.9).init(old)
        new, new_opt = drop_prenorm_biases(old), drop_prenorm_biases(opt_state)
        fresh = {"block": params}
        chex.assert_trees_all_equal_structs(new, fresh)
        chex.assert_trees_all_equal_structs(new_opt, optax.sgd(0.1, momentum=0.9).init(fresh))

    def test_bfloat16_mapping_is_close_to_float32(self):
        """lns.mapping_dtype="bfloat16": float32 parameters and statistics, bf16 convs."""
        kernel = jax.random.normal(jax.random.key(0), (3, 3, 32, 64))
        net32 = bnnns.MappingNet()
        params = net32.init(jax.random.key(1), kernel)
        q32 = net32.apply(params, kernel)
        q16 = bnnns.MappingNet(dtype="bfloat16").apply(params, kernel)
        self.assertEqual(q16.dtype, jnp.float32)  # q^ keeps the kernel's dtype
        rel = float(jnp.linalg.norm(q16 - q32) / jnp.linalg.norm(q32))
        self.assertLess(rel, 0.03)
        self.assertGreater(float(jnp.mean(jnp.sign(q16) == jnp.sign(q32))), 0.98)
        self.assertGreater(rel, 0.0)  # bfloat16 really was used

    def test_layer_threads_the_mapping_dtype(self):
        x = jnp.ones((1, 5, 5, 8))
        layers = [bnnns.BinaryConv(8, weight_binarizer="lns", mapping_dtype=d)
                  for d in ("float32", "bfloat16")]  # fmt: skip
        v = bnnns.nn.layers.drop_sown(layers[0].init(jax.random.key(0), x))
        jaxpr = str(jax.make_jaxpr(lambda v: layers[1].apply(v, x, mutable=["lns"]))(v))
        self.assertIn("bf16", jaxpr)
        self.assertNotIn("bf16", str(jax.make_jaxpr(lambda v: layers[0].apply(
            v, x, mutable=["lns"]))(v)))  # fmt: skip

    def test_bad_options_are_named(self):
        kernel = jnp.ones((3, 3, 2, 4))
        with pytest.raises(ValueError, match="conv_impl.*'fft'"):
            bnnns.MappingNet(conv_impl="fft").init(jax.random.key(0), kernel)
        with pytest.raises(ValueError, match="mapping_dtype.*'float16'"):
            bnnns.BinaryConv(2, weight_binarizer="lns", mapping_dtype="float16").init(
                jax.random.key(0), jnp.ones((1, 3, 3, 2))
            )
        config = base_config()
        config.lns.mapping_dtype = "float16"
        with pytest.raises(ConfigError, match="lns.mapping_dtype='float16'"):
            validate_config(config)


@pytest.mark.parametrize("impl", mapping.MAPPING_IMPLS)
def test_make_mapping_net_builds_the_named_implementation(impl):
    net = mapping.make_mapping_net(impl, residual=True, dtype="bfloat16", name="mapping")
    if impl == "reference":
        assert type(net) is ReferenceMappingNet
    else:
        assert type(net) is bnnns.MappingNet and net.conv_impl == impl
    assert (net.residual, net.dtype, net.name) == (True, "bfloat16", "mapping")


def test_make_mapping_net_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="mapping implementation must be one of .*got 'fast'"):
        mapping.make_mapping_net("fast")
