"""The native weight gradient of the binary layers' convolution (bnnns.core.conv_dw) against
XLA's, and where binary_conv uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONV_PADDINGS
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnns.core import conv_dw, native

needs_native = pytest.mark.skipif(
    not native.status().available, reason=f"no native kernel: {native.status().detail}"
)
_NHWC = ("NHWC", "HWIO", "NHWC")


def _xla_conv(x, w, strides, padding):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _xla_weight_grad(x, g, w, strides, padding):
    _, vjp = jax.vjp(lambda w: _xla_conv(x, w, strides, padding), w)
    return vjp(g)[0]


def _close(a, b, tol=2e-5):
    """Equal to float32 rounding of sums over up to a few thousand terms."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.abs(b).max()), 1e-6)
    np.testing.assert_allclose(a / scale, b / scale, atol=tol, rtol=0)


@needs_native
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    c_in=st.sampled_from([1, 3, 6, 7, 16, 33]),
    c_out=st.sampled_from([1, 5, 8, 16, 24, 32, 40, 67]),
    khw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=CONV_PADDINGS,
    chunks=st.sampled_from([1, 2, 5, 64]),
    jit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_weight_grad_equals_xla(n, hw, c_in, c_out, khw, strides, padding, chunks, jit, seed):
    """Every register-block path (6 x 32 / 6 x 16 AVX-512, 6 x 16 / 6 x 8 AVX2, scalar tails
    over odd c_in and c_out), strides, asymmetric padding, any number of row chunks."""
    from bnnns.core.xnor_conv import explicit_padding

    pads = explicit_padding(hw, khw, strides, padding)
    if any(hw[i] + sum(pads[i]) < khw[i] for i in range(2)):
        return  # no output position
    kx, kw_, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n, *hw, c_in))
    w = jax.random.normal(kw_, (*khw, c_in, c_out))
    g = jax.random.normal(kg, _xla_conv(x, w, strides, padding).shape)
    op = lambda x, g: conv_dw.weight_grad(x, g, khw, strides, padding, chunks)  # noqa: E731
    got = (jax.jit(op) if jit else op)(x, g)
    assert got.shape == w.shape and got.dtype == jnp.float32
    _close(got, _xla_weight_grad(x, g, w, strides, padding))


@needs_native
@pytest.mark.parametrize("shape,strides", [((4, 16, 16, 16), (1, 1)), ((2, 9, 8, 32), (2, 2))])
def test_conv_grads_equal_xla_with_and_without_vmap(shape, strides):
    """conv's forward is XLA's exactly; its input gradient is XLA's, its weight gradient the
    native one; under vmap (the S-seed step) the kernel runs per seed."""
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 24))

    def loss(conv, x, w):
        return jnp.sum(jnp.sin(conv(x, w, strides, "SAME")))

    native_grads = jax.jit(jax.grad(lambda x, w: loss(conv_dw.conv, x, w), (0, 1)))
    xla_grads = jax.jit(jax.grad(lambda x, w: loss(_xla_conv, x, w), (0, 1)))
    forward = conv_dw.conv(x, w, strides, "SAME")
    np.testing.assert_array_equal(np.asarray(forward), np.asarray(_xla_conv(x, w, strides, "SAME")))
    (dx, dw), (dx_ref, dw_ref) = native_grads(x, w), xla_grads(x, w)
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx_ref))
    _close(dw, dw_ref)
    xs, ws = jnp.stack([x, -x]), jnp.stack([w, 2 * w])
    dws = jax.jit(jax.vmap(native_grads))(xs, ws)[1]
    for s in range(2):
        _close(dws[s], xla_grads(xs[s], ws[s])[1])


@needs_native
@pytest.mark.skipif(
    jax.default_backend() != "cpu" or jax.device_count() != 1,
    reason="the native weight gradient applies on one CPU device",
)
def test_binary_layer_gradients_with_the_native_kernel_equal_xla(monkeypatch):
    """A BinaryConv's parameter gradients (sign STE, a strided conv) through binary_conv with
    BNNNS_CONV_DW=native and =xla."""
    import bnnns

    layer = bnnns.BinaryConv(16, strides=(2, 2), weight_binarizer="sign")
    x = jax.random.normal(jax.random.key(0), (4, 10, 10, 8))
    variables = bnnns.nn.layers.drop_sown(layer.init(jax.random.key(1), x))

    def grads():
        def loss(params):
            return jnp.sum(layer.apply({**variables, "params": params}, x) ** 2)

        return jax.jit(jax.grad(loss))(variables["params"])  # traced anew: a new function

    monkeypatch.setenv(conv_dw.CONV_DW_ENV, "native")
    assert conv_dw.uses_native()
    got = grads()
    monkeypatch.setenv(conv_dw.CONV_DW_ENV, "xla")
    assert not conv_dw.uses_native()
    want = grads()
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        _close(a, b)


def test_uses_native_follows_the_environment(monkeypatch):
    monkeypatch.delenv(conv_dw.CONV_DW_ENV, raising=False)
    assert not conv_dw.uses_native()  # XLA's by default
    monkeypatch.setenv(conv_dw.CONV_DW_ENV, "xla")
    assert not conv_dw.uses_native()
    monkeypatch.setenv(conv_dw.CONV_DW_ENV, "native")
    single_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    assert conv_dw.uses_native() == (single_cpu and native.status().available)
    assert not conv_dw.uses_native(feature_group_count=2)  # grouped convs stay XLA's
    monkeypatch.setenv(conv_dw.CONV_DW_ENV, "fast")
    with pytest.raises(ValueError, match=r"\$BNNNS_CONV_DW must be one of .*got 'fast'"):
        conv_dw.uses_native()


@needs_native
def test_weight_grad_refuses_bad_chunks():
    x, g = jnp.ones((1, 3, 3, 2)), jnp.ones((1, 3, 3, 4))
    with pytest.raises(ValueError, match="chunks must be >= 1, got 0"):
        conv_dw.weight_grad(x, g, (3, 3), chunks=0)
