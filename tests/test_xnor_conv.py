"""The XNOR-popcount native kernel (bnnns.core.xnor_conv) against the float and int8 references,
and the kernel choice of predict with and without the native kernel."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONV_PADDINGS
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnns.core import native
from bnnns.core.binary_ops import int_conv, int_dense, sign_int8
from bnnns.core.xnor_conv import explicit_padding, pack_window_weights, xnor_conv, xnor_dense
from bnnns.deploy import inference

needs_native = pytest.mark.skipif(
    not native.status().available, reason=f"no native kernel: {native.status().detail}"
)


def _inputs(seed, x_shape, q_shape):
    """Normal inputs with exact zeros and negative zeros (both are +1, D10); ±1 weights."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[rng.random(x_shape) < 0.1] = 0.0
    x[rng.random(x_shape) < 0.1] = -0.0
    q = np.where(rng.random(q_shape) < 0.5, -1, 1).astype(np.int8)
    return jnp.asarray(x), jnp.asarray(q)


def _float_conv(x, q, strides, padding):
    """The float reference: sign(x) (zero-padded) convolved with ±1 weights in float32."""
    return jax.lax.conv_general_dilated(
        jnp.where(x >= 0, 1.0, -1.0),
        q.astype(jnp.float32),
        strides,
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )


@needs_native
@settings(max_examples=12)
@given(
    n=st.integers(1, 2),
    hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    c_in=st.sampled_from([1, 3, 5, 16, 31, 64, 65, 70, 130]),
    c_out=st.integers(1, 5),
    khw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=CONV_PADDINGS,
    jit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_xnor_conv_equals_the_float_conv_of_signs(
    n, hw, c_in, c_out, khw, strides, padding, jit, seed
):
    pads = explicit_padding(hw, khw, strides, padding)
    if any(hw[i] + sum(pads[i]) < khw[i] for i in range(2)):
        return  # no output position
    x, q = _inputs(seed, (n, *hw, c_in), (*khw, c_in, c_out))
    op = lambda x, q: xnor_conv(x, q, strides, padding)  # noqa: E731
    acc = (jax.jit(op) if jit else op)(x, q)
    assert acc.dtype == jnp.int32
    want = _float_conv(x, q, strides, padding)
    np.testing.assert_array_equal(np.asarray(acc), np.asarray(want).astype(np.int32))
    ref = int_conv(sign_int8(x), q, strides, padding)
    np.testing.assert_array_equal(np.asarray(acc), np.asarray(ref))


RUNNABLE_ISAS = native.status().runnable


@needs_native
@pytest.mark.parametrize("isa", RUNNABLE_ISAS)
@settings(max_examples=6)
@given(
    hw=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    c_in=st.sampled_from([2, 16, 21, 32, 64, 100, 700]),
    c_out=st.sampled_from([3, 4, 8, 12, 17, 64]),
    khw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=CONV_PADDINGS,
    seed=st.integers(0, 2**16),
)
def test_every_instruction_set_gives_the_int8_conv(
    isa, hw, c_in, c_out, khw, strides, padding, seed
):
    """Each of the kernel's builds (portable, AVX2 nibble-table, AVX-512 VPOPCNTQ) that this CPU
    runs, over channel counts that fill 4- and 8-channel vectors and leave tails, and windows of
    more than 31 words (c_in 700: the AVX2 byte counters' flush)."""
    pads = explicit_padding(hw, khw, strides, padding)
    if any(hw[i] + sum(pads[i]) < khw[i] for i in range(2)):
        return  # no output position
    x, q = _inputs(seed, (2, *hw, c_in), (*khw, c_in, c_out))
    acc = jax.jit(lambda x, q: xnor_conv(x, q, strides, padding, isa=isa))(x, q)
    ref = int_conv(sign_int8(x), q, strides, padding)
    np.testing.assert_array_equal(np.asarray(acc), np.asarray(ref))


@needs_native
@pytest.mark.parametrize("isa", RUNNABLE_ISAS)
@pytest.mark.parametrize(
    "c_in,c_out,stride",
    [(16, 16, 1), (16, 32, 2), (32, 32, 1), (64, 67, 1), (128, 24, 2), (5, 8, 1)],
)
def test_every_instruction_set_on_resnet_like_shapes(isa, c_in, c_out, stride):
    """Each build on 3x3 SAME convs of resnet20/Bi-Real widths (the windows of 3, 6, 9 and 18
    words the kernel specialises, 4 positions per block, vector-filling and odd c_out)."""
    x, q = _inputs(c_in + c_out, (2, 9, 10, c_in), (3, 3, c_in, c_out))
    op = lambda x, q: xnor_conv(x, q, (stride, stride), "SAME", isa=isa)  # noqa: E731
    ref = int_conv(sign_int8(x), q, (stride, stride), "SAME")
    np.testing.assert_array_equal(np.asarray(jax.jit(op)(x, q)), np.asarray(ref))


@needs_native
@pytest.mark.parametrize("isa", RUNNABLE_ISAS)
@pytest.mark.parametrize("agree", [True, False])
def test_every_instruction_set_counts_full_windows_of_agreement_and_disagreement(isa, agree):
    """Every bit agreeing (acc = K) or disagreeing (acc = -K): each count byte of the AVX2 build
    holds 8 per word, the most its 31-word flush allows for; a 3x3 window of 700 channels is 99
    words."""
    x = jnp.ones((1, 3, 3, 700))
    q = jnp.full((3, 3, 700, 9), 1 if agree else -1, jnp.int8)
    acc = jax.jit(lambda x, q: xnor_conv(x, q, (1, 1), "VALID", isa=isa))(x, q)
    want = np.full((1, 1, 1, 9), 6300 if agree else -6300)
    np.testing.assert_array_equal(np.asarray(acc), want)


@needs_native
def test_xnor_conv_refuses_an_unknown_instruction_set():
    x, q = _inputs(0, (1, 3, 3, 2), (3, 3, 2, 1))
    with pytest.raises(ValueError, match="isa must be None or one of .*'portable'.*got 'sse9'"):
        xnor_conv(x, q, isa="sse9")


@needs_native
@settings(max_examples=8)
@given(
    n=st.integers(1, 3),
    hw=st.tuples(st.integers(3, 8), st.integers(3, 8)),
    c_in=st.sampled_from([3, 16, 70]),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    chunk_work=st.integers(1, 200),
    jit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_xnor_conv_is_the_same_on_the_pool_in_any_chunks(
    n, hw, c_in, strides, chunk_work, jit, seed
):
    """parallel_work=0 sends every call to XLA's pool in up to 64 chunks of output rows (and
    input rows to pack), also where chunks outnumber rows; the result is the serial one."""
    x, q = _inputs(seed, (n, *hw, c_in), (3, 3, c_in, 4))
    op = lambda x, q, **kw: xnor_conv(x, q, strides, "SAME", **kw)  # noqa: E731
    if jit:
        op = jax.jit(op, static_argnames=("chunk_work", "parallel_work"))
    pooled = op(x, q, chunk_work=chunk_work, parallel_work=0)
    serial = op(x, q, parallel_work=2**62)
    ref = int_conv(sign_int8(x), q, strides, "SAME")
    np.testing.assert_array_equal(np.asarray(pooled), np.asarray(ref))
    np.testing.assert_array_equal(np.asarray(serial), np.asarray(ref))


@needs_native
def test_xnor_conv_refuses_bad_thread_settings():
    x, q = _inputs(0, (1, 3, 3, 2), (3, 3, 2, 1))
    with pytest.raises(ValueError, match="chunk_work must be >= 1 and parallel_work >= 0, got 0, "):
        xnor_conv(x, q, chunk_work=0)
    with pytest.raises(ValueError, match="parallel_work >= 0, got 8192, -1"):
        xnor_conv(x, q, parallel_work=-1)


@needs_native
@pytest.mark.parametrize("c_in", [1, 63, 64, 200])
def test_xnor_dense_equals_int_dense(c_in):
    x, q = _inputs(c_in, (3, c_in), (c_in, 7))
    np.testing.assert_array_equal(
        np.asarray(jax.jit(xnor_dense)(x, q)), np.asarray(int_dense(sign_int8(x), q))
    )


def test_window_weights_layout_and_padding_counts():
    q = jnp.asarray(np.where(np.random.default_rng(0).random((3, 3, 8, 2)) < 0.5, -1, 1), jnp.int8)
    words, wpop = pack_window_weights(q)
    # 3 row segments of 24 bits, each in its own 64-bit word: L = 3 words per channel, stored
    # word-major with the 2 channels side by side (two uint32 per word)
    assert words.shape == (3, 4) and words.dtype == jnp.uint32
    per_channel = np.asarray(words).reshape(3, 2, 2).transpose(1, 0, 2)  # (c_out, ky, 2 u32)
    bits = np.unpackbits(per_channel.copy().view(np.uint8), axis=-1, bitorder="little")
    bits = bits.reshape(2, 3, 64)  # (c_out, ky, bit)
    flat = np.asarray(q).reshape(3, 24, 2).transpose(2, 0, 1) > 0  # bit kx c_in + c of ky
    np.testing.assert_array_equal(bits[:, :, :24], flat)
    assert not bits[:, :, 24:].any()  # pad bits are 0
    assert wpop.shape == (9, 2)  # (tap, c_out)
    np.testing.assert_array_equal(np.asarray(wpop).T, flat.reshape(2, 9, 8).sum(-1))


def test_explicit_padding_matches_lax_and_rejects_bad_pairs():
    assert explicit_padding((32, 32), (3, 3), (2, 2), "SAME") == ((0, 1), (0, 1))
    assert explicit_padding((5, 5), (3, 3), (1, 1), ((1, 2), (0, 0))) == ((1, 2), (0, 0))
    with pytest.raises(ValueError, match="two \\(lo, hi\\) pairs"):
        explicit_padding((5, 5), (3, 3), (1, 1), ((1, -1), (0, 0)))


@pytest.mark.parametrize(
    "env,value,reason",
    [
        ("BNNNS_NATIVE", "0", "disabled by BNNNS_NATIVE=0"),
        ("CXX", "/nonexistent/c++", "no C++ compiler found"),
        ("CXX", "false", "false failed"),
        ("BNNNS_XNOR_ISA", "sse9", "BNNNS_XNOR_ISA='sse9' is not one of ("),
    ],
)
def test_without_the_native_kernel_predict_falls_back_and_says_why(
    monkeypatch, tmp_path, env, value, reason
):
    monkeypatch.setenv("BNNNS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv(env, value)
    monkeypatch.setattr(native, "_STATUS", None)  # rebuild the status under this environment
    state = native.status()
    assert not state.available and reason in state.detail
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob(".xnor*"))
    kernel, why = inference.choose_kernel("auto")
    assert kernel == "int8" and reason in why
    with pytest.raises(ValueError, match=f"kernel 'xnor' is unavailable: .*{re.escape(reason)}"):
        inference.choose_kernel("xnor")
    with pytest.raises(RuntimeError, match="needs the native CPU kernel"):
        xnor_conv(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 2, 1), jnp.int8))
    assert inference.choose_kernel("int8")[0] == "int8"
    with pytest.raises(ValueError, match="kernel must be one of"):
        inference.choose_kernel("fast")


@needs_native
def test_auto_is_xnor_on_cpu_with_the_native_kernel():
    kernel, why = inference.choose_kernel("auto")
    assert jax.default_backend() != "cpu" or (kernel == "xnor" and "XNOR-popcount" in why)
