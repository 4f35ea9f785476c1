"""Exact integer arithmetic of deployed binary layers (method.md §1.7, Eq. 2).

With ``±1`` inputs ``B = sign(X)`` and ``±1`` weights ``Q``, a binary conv or dense layer is
``s * (B ⊛ Q)`` where ``B ⊛ Q`` is a sum of ``±1`` products: an integer. Here it is computed
exactly: ``int8`` operands, ``int32`` accumulation (``preferred_element_type``), or, for dense
layers, XNOR-popcount on packed ``uint32`` words: ``B·Q = n - 2 popcount(b XOR q)``.

A BatchNorm whose output goes only to the next layer's ``sign`` folds into a per-channel
integer threshold on that accumulator (:func:`fold_norm_threshold`, :func:`threshold_sign`):
``sign(BN(s * acc)) = +1  <=>  direction * acc >= threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bnnns.core.packing import pack_words

__all__ = [
    "sign_int8",
    "int_conv",
    "int_dense",
    "xnor_popcount_dense",
    "fold_norm_threshold",
    "threshold_sign",
]


def sign_int8(x: jax.Array) -> jax.Array:
    """``sign(x)`` as ``int8`` ±1 with ``sign(0) = +1`` (D10)."""
    return jnp.where(x >= 0, jnp.int8(1), jnp.int8(-1))


def int_conv(
    b: jax.Array,
    q: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Any = "SAME",
    feature_group_count: int = 1,
) -> jax.Array:
    """``B ⊛ Q`` exactly: NHWC ``int8`` ±1 inputs, HWIO ``int8`` ±1 weights, ``int32`` sums.

    Padding adds zeros, as the float layer pads its binarized input with zeros.

    Example:
        >>> import jax.numpy as jnp
        >>> b = jnp.ones((1, 3, 3, 2), jnp.int8)
        >>> q = jnp.ones((3, 3, 2, 1), jnp.int8)
        >>> int_conv(b, q)[0, :, :, 0].tolist()   # 18 in the centre, fewer at the zero pads
        [[8, 12, 8], [12, 18, 12], [8, 12, 8]]
    """
    return jax.lax.conv_general_dilated(
        b,
        q,
        window_strides=tuple(strides),
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=feature_group_count,
        preferred_element_type=jnp.int32,
    )


def int_dense(b: jax.Array, q: jax.Array) -> jax.Array:
    """``B · Q`` exactly: ``(N, c_in)`` and ``(c_in, c_out)`` ``int8`` ±1, ``int32`` sums."""
    return jax.lax.dot_general(
        b, q, (((b.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )


def xnor_popcount_dense(b: jax.Array, q: jax.Array) -> jax.Array:
    """``B · Q`` by XNOR-popcount: pack both into ``uint32`` words along ``c_in``, then
    ``n - 2 * popcount(b XOR q)`` summed over words (pad bits are 0 in both: they agree).

    Example:
        >>> import jax.numpy as jnp
        >>> b = jnp.array([[1, -1, 1]], jnp.int8); q = jnp.array([[1], [1], [-1]], jnp.int8)
        >>> xnor_popcount_dense(b, q).tolist()
        [[-1]]
    """
    n = b.shape[-1]
    bw = pack_words(b, axis=-1)  # (N, words)
    qw = pack_words(q, axis=0).T  # (c_out, words)
    disagree = jax.lax.population_count(bw[:, None, :] ^ qw[None, :, :])
    return n - 2 * jnp.sum(disagree.astype(jnp.int32), axis=-1)


def fold_norm_threshold(
    scale: jax.Array,
    gamma: jax.Array,
    beta: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    epsilon: float,
) -> tuple[jax.Array, jax.Array]:
    """Fold ``sign(BN(scale * acc))`` into ``(direction, threshold)`` per channel.

    ``BN(y) = gamma (y - mean) / sqrt(var + eps) + beta`` with ``y = scale * acc`` and
    ``scale > 0`` (D8), so with ``t = (mean - beta sqrt(var + eps) / gamma) / scale``:
    ``gamma > 0``: ``BN >= 0 <=> acc >= ceil(t)``; ``gamma < 0``: ``BN >= 0 <=> -acc >=
    -floor(t)``; ``gamma = 0``: the sign of ``beta`` whatever ``acc`` (direction 0, threshold
    0 or 1). Returns ``int32`` direction in ``{-1, 0, 1}`` and ``int32`` threshold.
    """
    sigma = jnp.sqrt(var + epsilon)
    safe_gamma = jnp.where(gamma == 0, 1.0, gamma)
    t = (mean - beta * sigma / safe_gamma) / scale
    limit = float(2**30)
    t = jnp.clip(t, -limit, limit)
    direction = jnp.sign(gamma).astype(jnp.int32)
    threshold = jnp.where(gamma > 0, jnp.ceil(t), -jnp.floor(t))
    threshold = jnp.where(gamma == 0, jnp.where(beta >= 0, 0.0, 1.0), threshold)
    return direction, threshold.astype(jnp.int32)


def threshold_sign(acc: jax.Array, direction: jax.Array, threshold: jax.Array) -> jax.Array:
    """``+1`` where ``direction * acc >= threshold``, else ``-1`` (``int8``), per channel."""
    return jnp.where(direction * acc >= threshold, jnp.int8(1), jnp.int8(-1))
