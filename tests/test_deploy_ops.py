"""Bit packing, exact integer binary conv/dense, XNOR-popcount and BN threshold folding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st

from bnnns.core.binary_ops import (
    fold_norm_threshold,
    int_conv,
    int_dense,
    sign_int8,
    threshold_sign,
    xnor_popcount_dense,
)
from bnnns.core.packing import pack_signs, pack_words, packed_length, unpack_signs


def _signs(seed, shape):
    return np.where(np.random.default_rng(seed).random(shape) < 0.5, -1, 1).astype(np.int8)


@given(
    shape=st.lists(st.integers(1, 11), min_size=1, max_size=4),
    axis_seed=st.integers(0, 100),
    word_bits=st.sampled_from([8, 32]),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_round_trip(shape, axis_seed, word_bits, seed):
    q = _signs(seed, shape)
    axis = axis_seed % len(shape)
    packed = pack_signs(q, axis=axis, word_bits=word_bits)
    expected = list(shape)
    expected[axis] = packed_length(shape[axis], word_bits)
    assert packed.dtype == (np.uint8 if word_bits == 8 else np.uint32)
    assert list(packed.shape) == expected
    np.testing.assert_array_equal(unpack_signs(packed, shape[axis], axis=axis), q)


@given(n=st.integers(1, 100), seed=st.integers(0, 2**16))
def test_jax_words_equal_numpy_words(n, seed):
    q = _signs(seed, (3, n))
    np.testing.assert_array_equal(
        np.asarray(pack_words(jnp.asarray(q), axis=-1)), pack_signs(q, axis=1, word_bits=32)
    )


def test_bit_order_and_padding():
    # bit j of byte i is element 8 i + j; +1 -> 1; the pad bits are 0
    assert pack_signs(np.array([1, -1, -1, -1, -1, -1, -1, -1, 1])).tolist() == [1, 1]
    assert pack_signs(np.array([-1, 1]), word_bits=32).tolist() == [2]


def test_pack_rejects_non_signs_and_wrong_lengths():
    with pytest.raises(ValueError, match=r"\+1 or -1, found 0"):
        pack_signs(np.array([1, 0, -1]))
    with pytest.raises(ValueError, match="word_bits must be one of"):
        pack_signs(np.array([1]), word_bits=16)
    with pytest.raises(ValueError, match="9 bits need 2 words"):
        unpack_signs(np.zeros(1, np.uint8), 9)


CONVS = [  # input shape, kernel shape, strides, padding, groups
    ((2, 7, 7, 4), (3, 3, 4, 5), (1, 1), "SAME", 1),
    ((2, 9, 9, 4), (5, 5, 2, 6), (2, 2), "VALID", 2),
    ((1, 8, 8, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1)), 1),
    ((2, 5, 5, 6), (1, 1, 6, 3), (1, 1), "SAME", 1),
]


class IntegerOpsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*CONVS)
    def test_int_conv_equals_float_conv(self, x_shape, q_shape, strides, padding, groups):
        x = jax.random.normal(jax.random.key(0), x_shape)
        q = jnp.asarray(_signs(1, q_shape))
        acc = self.variant(lambda b, q: int_conv(b, q, strides, padding, groups))(sign_int8(x), q)
        ref = jax.lax.conv_general_dilated(
            jnp.where(x >= 0, 1.0, -1.0),
            q.astype(jnp.float32),
            strides,
            padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
            precision="highest",
        )
        self.assertEqual(acc.dtype, jnp.int32)
        np.testing.assert_array_equal(np.asarray(acc), np.asarray(ref).astype(np.int32))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 31, 32, 33, 100)
    def test_int_dense_and_xnor_popcount_equal_float_dense(self, n_in):
        b = jnp.asarray(_signs(2, (5, n_in)))
        q = jnp.asarray(_signs(3, (n_in, 7)))
        ref = np.asarray(b, np.int64) @ np.asarray(q, np.int64)
        dense = self.variant(int_dense)(b, q)
        self.assertEqual(dense.dtype, jnp.int32)
        np.testing.assert_array_equal(np.asarray(dense), ref)
        np.testing.assert_array_equal(np.asarray(self.variant(xnor_popcount_dense)(b, q)), ref)


def test_sign_int8_zero_is_plus_one():
    assert sign_int8(jnp.array([-0.5, 0.0, 2.0])).tolist() == [-1, 1, 1]


@given(seed=st.integers(0, 2**16))
def test_bn_threshold_folding_equals_sign_of_batch_norm(seed):
    rng = np.random.default_rng(seed)
    c, eps = 16, 1e-5
    acc = rng.integers(-60, 61, (200, c)).astype(np.int32)
    scale = rng.uniform(0.01, 2.0, c).astype(np.float32)
    gamma = rng.normal(size=c).astype(np.float32)
    gamma[:3] = 0.0  # constant outputs: sign(beta)
    gamma[3:8] = -np.abs(gamma[3:8])  # negative gammas reverse the comparison
    beta = rng.normal(size=c).astype(np.float32)
    mean = rng.normal(scale=10.0, size=c).astype(np.float32)
    var = rng.uniform(0.1, 50.0, c).astype(np.float32)
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    bn = f64(gamma) * (f64(scale) * acc - f64(mean)) / np.sqrt(f64(var) + eps) + f64(beta)
    want = np.where(bn >= 0, 1, -1)
    direction, threshold = fold_norm_threshold(scale, gamma, beta, mean, var, eps)
    assert threshold.dtype == jnp.int32
    got = np.asarray(threshold_sign(jnp.asarray(acc), direction, threshold))
    decided = np.abs(bn) > 1e-4  # float32 rounding can only matter at BN(y) ~ 0
    assert decided.mean() > 0.97
    np.testing.assert_array_equal(got[decided], want[decided])
