"""Bit packing of binary weights: ±1 values <-> sign bits, 8 per byte or 32 per word.

A deployed binary layer keeps only ``Q = sign(.)`` (method.md §1.7): one bit per weight,
``1`` for ``+1`` and ``0`` for ``-1``, packed along the layer's input dimension (the axis a
binary dot product reduces over; ``c_in`` of a ``(kh, kw, c_in, c_out)`` conv kernel or a
``(c_in, c_out)`` dense kernel). Bit ``j`` of byte/word ``i`` holds element ``W * i + j``
(little bit order, ``W`` = 8 or 32); the last byte/word is padded with ``0`` bits.

:func:`pack_signs` / :func:`unpack_signs` are numpy (the artifact writer and reader);
:func:`pack_words` is the jax twin used by the XNOR-popcount path (:mod:`bnnns.core.binary_ops`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pack_signs", "unpack_signs", "packed_length", "pack_words", "WORD_DTYPES"]

WORD_DTYPES = {8: np.uint8, 32: np.uint32}


def packed_length(n: int, word_bits: int = 8) -> int:
    """Bytes (``word_bits=8``) or words (``32``) that hold ``n`` sign bits."""
    return -(-n // word_bits)


def _check_word_bits(word_bits: int) -> None:
    if word_bits not in WORD_DTYPES:
        raise ValueError(f"word_bits must be one of {sorted(WORD_DTYPES)}, got {word_bits}")


def pack_signs(q: np.ndarray, axis: int = 0, word_bits: int = 8) -> np.ndarray:
    """Pack ±1 values into sign bits along ``axis`` (``uint8`` or ``uint32``).

    Args:
      q: an array of ``+1`` / ``-1`` (any numeric dtype); anything else is an error.
      axis: the axis to pack (the input dimension of the layer).
      word_bits: 8 (``uint8``, the artifact format) or 32 (``uint32`` words).

    Returns:
      ``q``'s shape with ``axis`` shortened to ``ceil(n / word_bits)``.

    Example:
        >>> import numpy as np
        >>> packed = pack_signs(np.array([1, -1, -1, 1, 1, 1, 1, 1, -1]))
        >>> packed.tolist()
        [249, 0]
        >>> unpack_signs(packed, 9).tolist()
        [1, -1, -1, 1, 1, 1, 1, 1, -1]
    """
    _check_word_bits(word_bits)
    q = np.asarray(q)
    if q.size and not np.all((q == 1) | (q == -1)):
        bad = q[(q != 1) & (q != -1)].ravel()[0].item()
        raise ValueError(f"pack_signs: every value must be +1 or -1, found {bad!r}")
    bits = np.moveaxis(q > 0, axis, -1)
    packed = np.packbits(bits, axis=-1, bitorder="little")  # uint8, 8 bits per byte
    if word_bits == 32:
        pad = (-packed.shape[-1]) % 4
        packed = np.pad(packed, [(0, 0)] * (packed.ndim - 1) + [(0, pad)])
        packed = np.ascontiguousarray(packed).view("<u4").astype(np.uint32)
    return np.moveaxis(packed, -1, axis)


def unpack_signs(packed: np.ndarray, n: int, axis: int = 0) -> np.ndarray:
    """Inverse of :func:`pack_signs`: ``int8`` ±1 values, ``n`` of them along ``axis``."""
    packed = np.asarray(packed)
    if packed.dtype not in (np.uint8, np.uint32):
        raise ValueError(f"unpack_signs: packed bits must be uint8 or uint32, got {packed.dtype}")
    moved = np.moveaxis(packed, axis, -1)
    word_bits = 8 * packed.dtype.itemsize
    if moved.shape[-1] != packed_length(n, word_bits):
        raise ValueError(
            f"unpack_signs: {n} bits need {packed_length(n, word_bits)} words of {word_bits} "
            f"bits along axis {axis}, got {moved.shape[-1]}"
        )
    as_bytes = np.ascontiguousarray(moved.astype(moved.dtype.newbyteorder("<"))).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, count=n, bitorder="little")
    return np.moveaxis(bits.astype(np.int8) * 2 - 1, -1, axis)


def pack_words(q: jax.Array, axis: int = -1) -> jax.Array:
    """jax: ±1 (or any sign-carrying) values -> ``uint32`` words of sign bits along ``axis``.

    ``x >= 0`` is bit 1, matching ``sign(0) = +1`` (D10). The last word is padded with 0 bits,
    which XNOR-popcount callers must count out (:func:`bnnns.core.binary_ops.xnor_popcount_dense`).
    """
    q = jnp.moveaxis(q, axis, -1)
    n = q.shape[-1]
    pad = packed_length(n, 32) * 32 - n
    bits = jnp.pad(q >= 0, [(0, 0)] * (q.ndim - 1) + [(0, pad)]).astype(jnp.uint32)
    bits = bits.reshape(*bits.shape[:-1], -1, 32)
    words = jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)
    return jnp.moveaxis(words, -1, axis)
