"""The NNX layers (bnnns.nnx) against the linen ones, the linen layers under nnx.bridge, and an
NNX model exported to .bnn and run by predict."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.nnx import bridge
from hypothesis import given, settings
from hypothesis import strategies as st

import bnnns
import bnnns.nnx as bnx
from bnnns.deploy import artifact, inference
from bnnns.deploy.export_nnx import export_nnx
from bnnns.nn.models import BinaryOptions, create_model

OPTIONS = st.fixed_dictionaries(
    {
        "weight_binarizer": st.sampled_from(["sign", "lns", "real"]),
        "weight_scale": st.sampled_from(["none", "layer", "channel"]),
        "weight_ste": st.sampled_from(["identity", "clipped", "ede"]),
        "activation": st.sampled_from(
            ["ste_sign", "approx_sign", "swish_sign", "ede_sign", "rsign", "none"]
        ),
        "cls_grad_to_w": st.sampled_from(["mapping", "straight"]),
        "labels": st.sampled_from(["current", "pretrained"]),
        "residual_mapping": st.booleans(),
        "mapping_impl": st.sampled_from(["auto", "reference"]),
        "aux_reduction": st.sampled_from(["mean", "sum"]),
    }
)
OPTIONS_ORDER = (
    *("weight_binarizer", "weight_scale", "weight_ste", "activation", "cls_grad_to_w"),
    *("labels", "residual_mapping", "mapping_impl", "aux_reduction"),
)
SHAPES = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["conv", "dense"]),
        "c_in": st.integers(1, 3),
        "c_out": st.integers(1, 3),
        "size": st.integers(2, 3),
        "ksize": st.sampled_from([1, 3]),
        "stride": st.sampled_from([1, 2]),
    }
)


def _pair(shape, options, seed=0):
    """An NNX layer with random weights (built under jit: eager init compiles op by op), the
    linen layer with the same options, and an input."""
    if shape["kind"] == "conv":
        k, s = (shape["ksize"],) * 2, (shape["stride"],) * 2
        make = lambda rngs: bnx.BinaryConv(
            shape["c_in"], shape["c_out"], k, s, rngs=rngs, **options
        )
        twin = bnnns.BinaryConv(shape["c_out"], kernel_size=k, strides=s, **options)
        x_shape = (2, shape["size"], shape["size"], shape["c_in"])
    else:
        make = lambda rngs: bnx.BinaryDense(shape["c_in"], shape["c_out"], rngs=rngs, **options)
        twin = bnnns.BinaryDense(shape["c_out"], **options)
        x_shape = (3, shape["c_in"])

    @nnx.jit
    def build():
        layer = make(nnx.Rngs(seed))
        if options["weight_binarizer"] == "lns":  # random theta (residual: last conv is zero)
            params = nnx.state(layer.mapping, nnx.Param)
            keys = iter(jax.random.split(jax.random.key(seed + 1), 16))
            noise = lambda p: jax.random.normal(next(keys), p.shape) * 0.3
            nnx.update(layer.mapping, jax.tree.map(noise, params))
        if options["activation"] == "rsign":
            layer.act_threshold[...] = jax.random.normal(jax.random.key(seed + 3), (shape["c_in"],))
        bnx.set_progress(layer, 0.3)  # IR-Net's EDE (a no-op without it): t = 0.4, k = 2.5
        return layer

    return build(), twin, jax.random.normal(jax.random.key(seed + 2), x_shape)


def _linen_loss(twin, variables, x, r):
    params = variables["params"]

    def loss(params):
        y, cols = twin.apply({**variables, "params": params}, x, mutable=["lns"])
        return jnp.sum(y * r) + bnnns.collect_aux_loss(cols.get("lns", {})), y

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def _nnx_loss(layer, x, r):
    def loss(layer):
        y = layer(x)
        return jnp.sum(y * r) + bnx.collect_aux_loss(layer), y

    (value, y), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(layer)
    return (value, y), grads.to_pure_dict()


CASES = [  # every LNS switch once, besides the drawn examples
    (
        "conv",
        "lns",
        "channel",
        "clipped",
        "rsign",
        "straight",
        "pretrained",
        True,
        "reference",
        "sum",
    ),
    (
        "dense",
        "lns",
        "layer",
        "identity",
        "swish_sign",
        "mapping",
        "current",
        False,
        "auto",
        "mean",
    ),
    (
        "conv",
        "sign",
        "channel",
        "clipped",
        "approx_sign",
        "mapping",
        "current",
        False,
        "auto",
        "mean",
    ),
    ("dense", "sign", "none", "ede", "ede_sign", "mapping", "current", False, "auto", "mean"),
]


@pytest.mark.parametrize("case", CASES)
def test_nnx_layers_equal_linen_on_each_switch(case):
    kind, *values = case
    shape = {"kind": kind, "c_in": 2, "c_out": 3, "size": 3, "ksize": 3, "stride": 1}
    _check_equal(shape, dict(zip(OPTIONS_ORDER, values, strict=True)))


@settings(max_examples=4)
@given(SHAPES, OPTIONS)
def test_nnx_layers_equal_linen_outputs_aux_losses_and_gradients(shape, options):
    _check_equal(shape, options)


def _check_equal(shape, options):
    layer, twin, x = _pair(shape, options)
    variables = bnx.to_linen_variables(layer)
    out = jax.eval_shape(twin.apply, variables, x)
    r = jax.random.normal(jax.random.key(9), out.shape)
    (lin_value, lin_y), lin_grads = _linen_loss(twin, variables, x, r)
    (nnx_value, nnx_y), nnx_grads = _nnx_loss(layer, x, r)
    np.testing.assert_allclose(nnx_y, lin_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nnx_value, lin_value, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 nnx_grads, lin_grads)  # fmt: skip
    if options["weight_binarizer"] != "real":  # the binary weights, by type, as linen sows them
        _, cols = jax.jit(lambda v: twin.apply(v, x, mutable=["binary_weights"]))(variables)
        q = nnx.state(layer, bnx.BinaryWeights).to_pure_dict()["kernel_sign"]
        np.testing.assert_array_equal(q, cols["binary_weights"]["kernel_sign"][0])


@pytest.mark.parametrize("kind", ["conv", "dense"])
@pytest.mark.parametrize("activation", ["ste_sign", "rsign", "none"])
def test_deployed_nnx_layers_equal_linen(kind, activation):
    shape = {"kind": kind, "c_in": 3, "c_out": 2, "size": 4, "ksize": 3, "stride": 1}
    options = {"weight_binarizer": "deployed", "weight_scale": "channel", "activation": activation}
    layer, twin, x = _pair(shape, options)
    bits = jnp.where(jax.random.normal(jax.random.key(3), layer.bits.shape) > 0, 1, -1)
    layer.bits[...] = bits.astype(jnp.int8)
    layer.scale[...] = jnp.abs(jax.random.normal(jax.random.key(4), layer.scale.shape))
    if activation == "rsign":  # ReActNet's threshold, subtracted before the sign
        layer.act_threshold[...] = jax.random.normal(jax.random.key(5), layer.act_threshold.shape)
    variables = bnx.to_linen_variables(layer)
    assert set(variables) == ({"binary", "params"} if activation == "rsign" else {"binary"})
    np.testing.assert_array_equal(layer(x), twin.apply(variables, x))
    if activation != "none":
        for got, want in zip(layer(x, True), twin.apply(variables, x, True), strict=True):
            np.testing.assert_array_equal(got, want)


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match=r"BinaryDense.weight_scale must be one of"):
        bnx.BinaryDense(2, 2, weight_scale="row", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"MappingNet.impl must be one of"):
        bnx.MappingNet(2, impl="fft", rngs=nnx.Rngs(0))


def test_linen_layers_work_under_the_nnx_bridge():
    linen = bnnns.BinaryConv(3, weight_binarizer="lns")
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 2))
    # lazy_init raised "duplicate variable path ('kernel',)" before (jit: eager is slow)
    model = nnx.jit(lambda: bridge.lazy_init(bridge.ToNNX(linen, rngs=nnx.Rngs(0)), x))()
    variables = {"params": nnx.state(model, nnx.Param).to_pure_dict()}
    apply = jax.jit(lambda v: linen.apply(v, x, mutable=["lns", "binary_weights"]))
    want_y, cols = apply(variables)
    np.testing.assert_allclose(nnx.jit(lambda m: m(x))(model), want_y, rtol=1e-6, atol=1e-6)
    r = jax.random.normal(jax.random.key(2), want_y.shape)

    def loss(model):
        y = model(x, mutable=["lns"])
        return jnp.sum(y * r) + bnx.collect_aux_loss(model)

    step = nnx.jit(nnx.value_and_grad(loss))
    (want_value, _), want_grads = _linen_loss(linen, variables, x, r)
    for _ in range(2):  # sown values are replaced, never appended: the sum stays one layer's
        value, grads = step(model)
        np.testing.assert_allclose(value, want_value, rtol=1e-6)
        close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        jax.tree.map(close, grads.to_pure_dict(), want_grads)
    lns = nnx.state(model, bnx.LNS).to_pure_dict()  # the native layers' type, by filter
    assert sorted(lns) == ["aux_floor", "aux_loss", "label_agreement"]
    assert len(lns["aux_loss"]) == 1
    q = nnx.state(model, bnx.BinaryWeights).to_pure_dict()["kernel_sign"][0]
    np.testing.assert_array_equal(q, cols["binary_weights"]["kernel_sign"][0])


def _header(kwargs, shape):
    return {
        "model": {"name": "mlp", "kwargs": kwargs, "dtype": "float32", "num_classes": 10},
        "binary": {"weight_scale": "layer", "activation": "ste_sign", "act_clip": 1.0},
        "input_shape": list(shape),
        "normalization": {"mean": [0.0], "std": [1.0]},
        "dataset": "mnist",
    }


def test_nnx_model_exports_and_predicts_like_linen(binarizer="lns"):
    shape, kwargs = (6, 6, 1), {"hidden": 8, "depth": 2}
    binary = BinaryOptions(weight_binarizer=binarizer)
    model = nnx.jit(lambda: bnx.BinaryMLP(36, binary=binary, rngs=nnx.Rngs(0), **kwargs))()
    forward = nnx.jit(lambda model, x: model(x))
    for seed in range(3):  # move the BatchNorm statistics off their init
        forward(model, jax.random.normal(jax.random.key(seed), (16, *shape)) + 1.0)
    model.eval()
    images = jax.random.normal(jax.random.key(7), (6, *shape))
    want = forward(model, images)
    twin = create_model("mlp", num_classes=10, binary=binary, **kwargs)
    variables = bnx.to_linen_variables(model)
    linen_y = jax.jit(twin.apply)(variables, images)
    np.testing.assert_allclose(want, linen_y, rtol=1e-5, atol=1e-5)
    art = export_nnx(model, twin, images[:1], _header(kwargs, shape))
    art = artifact.from_bytes(artifact.to_bytes(art))
    got = inference.predict(art, images)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    assert not any("mapping" in k for k in art.arrays)
    with pytest.raises(ValueError, match="not those of BinaryMLP"):
        other = create_model("mlp", num_classes=10, binary=binary, hidden=8, depth=3)
        export_nnx(model, other, images[:1], _header(kwargs, shape))
