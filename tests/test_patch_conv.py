"""bnnns.core.patch_conv (im2col conv) against lax.conv_general_dilated, and its use as the
deployed XNOR path's stem conv."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from helpers import CONV_PADDINGS
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnns.core.patch_conv import patch_conv
from bnnns.nn.models import BinaryOptions

DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, strides, padding, **kwargs):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DN, **kwargs)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    hw=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    cin=st.integers(1, 5),
    cout=st.integers(1, 6),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=CONV_PADDINGS,
    jit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_equals_the_convolution(n, hw, cin, cout, kernel, strides, padding, jit, seed):
    """Every output within float32 rounding of lax's convolution, over shapes, strides,
    paddings (strings and explicit pairs), with and without jit."""
    kx, kw_ = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, *hw, cin))
    w = jax.random.normal(kw_, (*kernel, cin, cout))
    fn = lambda x, w: patch_conv(x, w, strides, padding, dimension_numbers=DN)  # noqa: E731
    got = (jax.jit(fn) if jit else fn)(x, w)
    want = _conv(x, w, strides, padding)
    chex.assert_equal_shape([got, want])
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_other_convolutions_go_to_lax():
    """Dilation (and any layout but NHWC/HWIO) is lax's own convolution, same values."""
    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
    got = patch_conv(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN)
    want = _conv(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    nchw = jnp.transpose(x, (0, 3, 1, 2))
    oihw = jnp.transpose(w, (3, 2, 0, 1))
    got = patch_conv(nchw, oihw, (1, 1), "SAME")  # lax's default layout: NCHW / OIHW
    want = jax.lax.conv_general_dilated(nchw, oihw, (1, 1), "SAME")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_gradient_matches_the_convolution():
    """Its gradients (w.r.t. input and kernel) are the convolution's."""
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 3))
    w = jax.random.normal(jax.random.key(3), (3, 3, 3, 5))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w, (2, 1), "SAME", dimension_numbers=DN)))  # noqa: E731
    got = jax.grad(loss(patch_conv), argnums=(0, 1))(x, w)
    want = jax.grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, w)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)


def test_stem_conv_is_patches_only_on_the_deployed_xnor_path():
    assert (
        BinaryOptions(weight_binarizer="deployed", deployed_kernel="xnor").stem_conv is patch_conv
    )
    for options in (
        BinaryOptions(),
        BinaryOptions(weight_binarizer="lns"),
        BinaryOptions(weight_binarizer="deployed", deployed_kernel="int8"),
    ):
        assert options.stem_conv is jax.lax.conv_general_dilated
