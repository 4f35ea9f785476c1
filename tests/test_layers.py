"""Tests of BinaryConv / BinaryDense (Eqs. 2, 4, 15, 17, 21; D1, D2, D6, D8)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st

import bnnns
from bnnns.core.mapping import CONV_IMPLS, ReferenceMappingNet, drop_prenorm_biases
from bnnns.core.scaling import SCALE_MODES
from bnnns.nn.layers import collect_aux_loss, drop_sown
from bnnns.train.default_config import base_config


def conv_setup(**kwargs):
    layer = bnnns.BinaryConv(6, **kwargs)
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
    variables = drop_sown(layer.init(jax.random.key(1), x))
    return layer, variables, x


class BinaryLayerTest(chex.TestCase):
    def test_sign_conv_uses_scaled_binary_weights(self):
        layer, variables, x = conv_setup(weight_scale="layer")
        y = layer.apply(variables, x)
        w = variables["params"]["kernel"]
        wb = jnp.where(w >= 0, 1.0, -1.0) * jnp.mean(jnp.abs(w))
        xb = jnp.where(x >= 0, 1.0, -1.0)
        ref = jax.lax.conv_general_dilated(
            xb, wb, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)

    def test_binary_weights_are_exported(self):
        layer, variables, x = conv_setup(weight_binarizer="lns")
        _, cols = layer.apply(variables, x, mutable=["binary_weights"])
        q = cols["binary_weights"]["kernel_sign"][0]
        self.assertEqual(q.dtype, jnp.int8)
        self.assertEqual(set(np.unique(np.asarray(q))) <= {-1, 1}, True)
        q_hat = bnnns.MappingNet().apply(
            {"params": variables["params"]["mapping"]}, variables["params"]["kernel"]
        )
        np.testing.assert_array_equal(q, np.where(q_hat >= 0, 1, -1))

    @parameterized.parameters("sign", "lns")
    def test_gradients_reach_w_and_theta(self, binarizer):
        layer, variables, x = conv_setup(weight_binarizer=binarizer)

        def loss(params):
            y, cols = layer.apply({"params": params}, x, mutable=["lns"])
            return jnp.mean(y**2) + collect_aux_loss(cols.get("lns", {}))

        grads = jax.grad(loss)(variables["params"])
        self.assertGreater(float(jnp.abs(grads["kernel"]).sum()), 0)
        if binarizer == "lns":
            for leaf in jax.tree.leaves(grads["mapping"]):
                chex.assert_tree_all_finite(leaf)
            self.assertGreater(
                sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["mapping"])), 0
            )

    def test_classification_gradient_reaches_theta_through_ste(self):
        """Eq. 19-20 / Algorithm 1 l.10-11: l_cls alone gives dL/dtheta != 0 (D2 STE)."""
        layer, variables, x = conv_setup(weight_binarizer="lns")
        grads = jax.grad(lambda p: jnp.mean(layer.apply({"params": p}, x) ** 2))(
            variables["params"]
        )
        self.assertGreater(float(jnp.abs(grads["mapping"]["Conv_0"]["kernel"]).sum()), 0)

    @parameterized.parameters("conv", "dense")
    def test_default_weight_ste_is_d2_clipped_on_q_hat(self, kind):
        """D2: a layer built with the defaults passes l_cls's gradient to theta only where
        ``|q^| <= 1`` (Eq. 3's clipped STE on q^), as the trainer's default config does."""
        layer = bnnns.BinaryConv(6) if kind == "conv" else bnnns.BinaryDense(6)
        layer = layer.clone(weight_binarizer="lns")
        x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4) if kind == "conv" else (3, 20))
        p = drop_sown(layer.init(jax.random.key(1), x))["params"]
        p = {**p, "mapping": jax.tree.map(lambda a: 2.0 * a, p["mapping"])}  # |q^| around 1
        target = jax.random.normal(jax.random.key(3), layer.apply({"params": p}, x).shape)
        grads = jax.grad(lambda p: jnp.mean((layer.apply({"params": p}, x) - target) ** 2))(p)
        w, scale = p["kernel"], jnp.mean(jnp.abs(p["kernel"]))
        net = bnnns.MappingNet()
        q_hat, pullback = jax.vjp(lambda m: net.apply({"params": m}, w), p["mapping"])
        inside = jnp.abs(q_hat) <= 1.0
        self.assertTrue(0.05 < float(jnp.mean(inside)) < 0.95)  # the mask matters here
        plain = bnnns.BinaryConv(6) if kind == "conv" else bnnns.BinaryDense(6)
        plain = plain.clone(weight_binarizer="real", activation="ste_sign")

        def cls_of_binary(qb):  # the same layer on fixed binary weights s * Q
            y = plain.apply({"params": {"kernel": qb * scale}}, x)
            return jnp.mean((y - target) ** 2)

        dl_dq = jax.grad(cls_of_binary)(jnp.where(q_hat >= 0, 1.0, -1.0))
        (expected,) = pullback(dl_dq * inside)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
            grads["mapping"],
            expected,
        )
        self.assertEqual(base_config().lns.weight_ste, "clipped")  # the trainer's, same default

    def test_straight_classification_gradient_to_w(self):
        """D14 "straight": same forward; theta's gradient as through the mapping; W's gradient
        of a classification-like loss is dl/dQ^ times the layer scale (Eq. 3), not J^T dl/dQ^."""
        ident = {"weight_binarizer": "lns", "weight_ste": "identity"}  # dl/dQ^ unmasked
        layer, variables, x = conv_setup(**ident)
        straight, _, _ = conv_setup(**ident, cls_grad_to_w="straight")
        target = jax.random.normal(jax.random.key(3), (2, 7, 7, 6))

        def cls_loss(module, p):
            return jnp.mean((module.apply({"params": p}, x) - target) ** 2)

        p = variables["params"]
        np.testing.assert_array_equal(
            layer.apply({"params": p}, x), straight.apply({"params": p}, x)
        )
        g_map = jax.grad(lambda p: cls_loss(layer, p))(p)
        g_str = jax.grad(lambda p: cls_loss(straight, p))(p)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
            g_map["mapping"],
            g_str["mapping"],
        )
        # dl/dQ^ through sign's identity STE, then the (stop-gradient) D8 scale
        w = p["kernel"]
        q_hat = bnnns.MappingNet().apply({"params": p["mapping"]}, w)
        scale = jnp.mean(jnp.abs(w))
        xb = jnp.where(x >= 0, 1.0, -1.0)

        def via_binary(qb):
            y = jax.lax.conv_general_dilated(
                xb, qb * scale, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return jnp.mean((y - target) ** 2)

        expected = jax.grad(via_binary)(jnp.where(q_hat >= 0, 1.0, -1.0))
        np.testing.assert_allclose(g_str["kernel"], expected, rtol=1e-4, atol=1e-7)
        self.assertFalse(np.allclose(g_map["kernel"], expected, rtol=1e-2))

    def test_aux_loss_is_eq16_mean_by_default(self):
        layer, variables, x = conv_setup(weight_binarizer="lns", rho_pos=0.01, rho_neg=0.02)
        _, cols = layer.apply(variables, x, mutable=["lns"])
        w = variables["params"]["kernel"]
        q_hat = bnnns.MappingNet().apply({"params": variables["params"]["mapping"]}, w)
        expected = bnnns.lns_loss(q_hat, jnp.where(w >= 0, 1.0, -1.0), 0.01, 0.02, "mean")
        np.testing.assert_allclose(collect_aux_loss(cols["lns"]), expected, rtol=1e-5)
        agreement = cols["lns"]["label_agreement"][0]
        np.testing.assert_allclose(agreement, 1 - bnnns.flip_rate(q_hat, w))

    @parameterized.parameters("layer", "channel", "none")
    def test_zero_init_residual_lns_equals_sign_layer(self, scale):
        """D6 residual mapping at init: the LNS layer computes exactly what the sign layer does."""
        lns, variables, x = conv_setup(
            weight_binarizer="lns", residual_mapping=True, weight_scale=scale
        )
        sign_layer = bnnns.BinaryConv(6, weight_scale=scale)
        y_sign = sign_layer.apply({"params": {"kernel": variables["params"]["kernel"]}}, x)
        np.testing.assert_array_equal(lns.apply(variables, x), y_sign)

    def test_dense_lns(self):
        layer = bnnns.BinaryDense(3, weight_binarizer="lns", activation="none")
        x = jax.random.normal(jax.random.key(0), (4, 5))
        variables = drop_sown(layer.init(jax.random.key(1), x))
        y, cols = layer.apply(variables, x, mutable=["lns"])
        chex.assert_shape(y, (4, 3))
        self.assertEqual(cols["lns"]["aux_loss"][0].shape, ())

    def test_pretrained_labels_are_frozen(self):
        layer, variables, x = conv_setup(weight_binarizer="lns", labels="pretrained")
        self.assertIn("lns_labels", variables)
        frozen = variables["lns_labels"]["q_tilde"]
        np.testing.assert_array_equal(frozen, np.where(variables["params"]["kernel"] >= 0, 1, -1))
        params = jax.tree.map(lambda p: p, variables["params"])
        params["kernel"] = -params["kernel"]  # W changes, the labels must not
        _, cols = layer.apply({**variables, "params": params}, x, mutable=["lns"])
        q_hat = bnnns.MappingNet().apply({"params": params["mapping"]}, params["kernel"])
        expected = bnnns.lns_loss(q_hat, frozen.astype(jnp.float32), 0.005, 0.005)
        np.testing.assert_allclose(collect_aux_loss(cols["lns"]), expected, rtol=1e-5)

    @parameterized.parameters(
        ({"weight_binarizer": "xnor"}, "weight_binarizer"),
        ({"weight_scale": "filter"}, "weight_scale"),
        ({"activation": "tanh"}, "activation"),
        ({"rho_pos": 0.6, "rho_neg": 0.5}, "rho_pos \\+ rho_neg"),
        ({"weight_binarizer": "float"}, "weight_binarizer must be one of .*'real'.*got 'float'"),
        ({"weight_binarizer": "lns", "mapping_impl": "fast"}, "mapping_impl .*got 'fast'"),
        ({"mapping_impl": "fast"}, "mapping_impl must be one of .*'reference'.*got 'fast'"),
    )
    def test_bad_options(self, kwargs, pattern):
        with pytest.raises(ValueError, match=pattern):
            conv_setup(**kwargs)


def _rel_l2(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@given(
    features=st.integers(1, 5),
    c_in=st.integers(1, 4),
    size=st.integers(1, 6),
    kernel_size=st.sampled_from([(1, 1), (3, 3), (3, 1), (2, 2)]),
    strides=st.sampled_from([(1, 1), (2, 2), (1, 2)]),
    padding=st.sampled_from(["SAME", "VALID", ((1, 0), (0, 1))]),
    scale=st.sampled_from(SCALE_MODES),
)
def test_real_conv_is_a_plain_flax_conv(features, c_in, size, kernel_size, strides, padding, scale):
    """weight_binarizer="real" (the float reference): the latent W as it is, no mapping net."""
    size = max(size, kernel_size[0], kernel_size[1])  # VALID needs an image at least this big
    layer = bnnns.BinaryConv(
        features,
        kernel_size=kernel_size,
        strides=strides,
        padding=padding,
        weight_binarizer="real",
        activation="none",
        weight_scale=scale,
        residual_mapping=True,
    )
    x = jax.random.normal(jax.random.key(0), (2, size, size + 1, c_in))
    variables = drop_sown(layer.init(jax.random.key(1), x))
    assert set(variables) == {"params"} and set(variables["params"]) == {"kernel"}
    plain = nn.Conv(features, kernel_size, strides, padding, use_bias=False)
    want = plain.apply(variables, x)
    chex.assert_trees_all_equal_shapes(plain.init(jax.random.key(1), x), variables)
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-6, atol=1e-6)


@given(
    features=st.integers(1, 6), c_in=st.integers(1, 6), scale=st.sampled_from(["layer", "channel"])
)
def test_real_dense_is_a_plain_flax_dense(features, c_in, scale):
    layer = bnnns.BinaryDense(
        features, weight_binarizer="real", activation="none", weight_scale=scale
    )
    x = jax.random.normal(jax.random.key(0), (3, c_in))
    variables = drop_sown(layer.init(jax.random.key(1), x))
    assert set(variables["params"]) == {"kernel"}
    want = nn.Dense(features, use_bias=False).apply(variables, x)
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-6, atol=1e-6)
    # Binary activations still apply: the real layer only leaves W as it is.
    xb = jnp.where(x >= 0, 1.0, -1.0)
    real_w = bnnns.BinaryDense(features, weight_binarizer="real").apply(variables, x)
    np.testing.assert_allclose(real_w, xb @ variables["params"]["kernel"], rtol=1e-6, atol=1e-6)


def _randomize_biases(tree, key):
    keys = iter(jax.random.split(key, 16))
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x + jax.random.normal(next(keys), x.shape) if path[-1].key == "bias" else x,
        tree,
    )


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("dense", [False, True])
def test_reference_mapping_impl_agrees_with_the_default(impl, dense):
    """mapping_impl="reference" builds ReferenceMappingNet; on the same theta (its pre-norm
    biases dropped) every other implementation gives the same layer output, auxiliary loss and
    dL/dW, within what the benchmarks' mapping A/B allows (relative L2 < 1e-4)."""
    make = bnnns.BinaryDense if dense else bnnns.BinaryConv
    x = jax.random.normal(jax.random.key(0), (2, 12) if dense else (2, 6, 6, 8))
    ref_layer = make(6, weight_binarizer="lns", mapping_impl="reference")
    ref_vars = drop_sown(ref_layer.init(jax.random.key(1), x))
    kernel = ref_vars["params"]["kernel"]
    want_tree = ReferenceMappingNet().init(jax.random.key(2), kernel)["params"]
    chex.assert_trees_all_equal_shapes(ref_vars["params"]["mapping"], want_tree)
    assert set(ref_vars["params"]["mapping"]["Conv_0"]) == {"kernel", "bias"}
    ref_vars = _randomize_biases(ref_vars, jax.random.key(3))
    new_vars = drop_prenorm_biases(ref_vars)
    assert set(new_vars["params"]["mapping"]["Conv_0"]) == {"kernel"}
    layer = make(6, weight_binarizer="lns", mapping_impl=impl)

    def loss(layer, params):
        y, cols = layer.apply({"params": params}, x, mutable=["lns"])
        return jnp.sum(y * jnp.cos(y)) + collect_aux_loss(cols["lns"]), (y, cols["lns"])

    (l_ref, (y_ref, lns_ref)), g_ref = jax.value_and_grad(
        lambda p: loss(ref_layer, p), has_aux=True
    )(ref_vars["params"])
    (l_new, (y_new, lns_new)), g_new = jax.value_and_grad(lambda p: loss(layer, p), has_aux=True)(
        new_vars["params"]
    )
    assert _rel_l2(y_new, y_ref) < 1e-4
    assert _rel_l2(collect_aux_loss(lns_new), collect_aux_loss(lns_ref)) < 1e-4
    assert _rel_l2(g_new["kernel"], g_ref["kernel"]) < 1e-4
    assert abs(float(l_new - l_ref)) <= 1e-4 * abs(float(l_ref))


@pytest.mark.parametrize("scale_mode", ["layer", "channel"])
@pytest.mark.parametrize("layer_kind", ["linen", "nnx"])
def test_equal_binary_sums_give_bit_equal_outputs(scale_mode, layer_kind):
    """``s * conv(x, Q)``, not ``conv(x, s * Q)``: on ±1 inputs, every output position with the
    same integer sum holds the same float, bit for bit, whatever the conv's summation order. A
    max-pool after the layer then breaks ties the same way on every XLA conv path (with ``s``
    folded into the weights, the first layers' gradients differed by 30% between XLA:CPU's two
    conv paths; bnnns/_xla_cpu.py)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(np.sign(rng.standard_normal((4, 9, 9, 24))).astype(np.float32))
    if layer_kind == "linen":
        layer = bnnns.BinaryConv(8, weight_scale=scale_mode)
        variables = drop_sown(layer.init(jax.random.key(0), x))
        y = layer.apply(variables, x)
        kernel = variables["params"]["kernel"]
    else:
        from flax import nnx

        layer = bnnns.nnx.BinaryConv(24, 8, weight_scale=scale_mode, rngs=nnx.Rngs(0))
        y = layer(x)
        kernel = layer.kernel[...]
    q = np.sign(np.asarray(kernel)).astype(np.int64)
    xi = np.asarray(x).astype(np.int64)
    counts = np.asarray(
        jax.lax.conv_general_dilated(
            jnp.asarray(xi, jnp.int32),
            jnp.asarray(q, jnp.int32),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    )
    y = np.asarray(y)
    groups = 0
    for c in range(y.shape[-1]):
        for k in np.unique(counts[..., c]):
            values = y[..., c][counts[..., c] == k]
            assert np.unique(values).size == 1, (c, k, np.unique(values))
            groups += values.size > 1
    assert groups > 8 * 20  # many tied groups were compared
