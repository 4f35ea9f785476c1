"""XNOR-popcount binary convolution on packed sign bits: the native CPU path of deployed layers.

``B ⊛ Q`` of :func:`bnnns.core.binary_ops.int_conv` (``B = sign(X)``, ``Q`` ±1, zero padding)
computed on packed bits by the native kernel (:mod:`bnnns.core.native`, an XLA FFI custom call):
the signs of every run of ``kw`` pixels of an input row are packed into a row segment of
``M = ceil(kw c_in / 64)`` 64-bit words (bit ``kx c_in + c``), each output's ``(kh, kw, c_in)``
window is its ``kh`` segments, ``L = kh M`` words (bit ``64 M ky + kx c_in + c``), and

    acc = K_valid - 2 * (sum_i popcount(col_i XOR q_i) - corr)          (int32, exact)

The zero-padded border is not a ±1 value: a tap outside the image contributes 0 to the float
conv. The kernel leaves its bits 0, so it would add ``popcount(q_tap)`` (the number of +1
weights of that tap, ``wpop``) disagreements; ``corr`` takes exactly those back, and
``K_valid = (taps inside the image) * c_in``. Pad bits past each segment's ``kw c_in`` are 0 in
window and weights alike and never count. A window is whole segments, so the kernel gathers it
with ``L`` word copies instead of bit shifts (at 16 channels ``L = 3``, as tightly packed; at 32
``L = 6`` against 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnnns.core import native
from bnnns.core.packing import pack_words

__all__ = [
    "CHUNK_WORK",
    "PARALLEL_WORK",
    "explicit_padding",
    "pack_window_weights",
    "xnor_conv",
    "xnor_dense",
]

# Threads: a call of ``work = N Ho Wo c_out L`` (output value, word) pairs runs on the calling
# thread alone below PARALLEL_WORK (every conv of resnet20 at batch 1: 20k-49k pairs; on the
# pool it was no faster, and it waits on pool threads a loaded machine deschedules), else in
# chunks of ~CHUNK_WORK pairs (at most 64) on XLA's intra-op pool.
CHUNK_WORK = 1 << 13
PARALLEL_WORK = 1 << 17


def explicit_padding(
    in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int], padding: Any
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` of ``padding`` (``"SAME"``, ``"VALID"`` or pairs),
    as ``lax.conv_general_dilated`` pads."""
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(tuple(in_hw), tuple(kernel_hw), tuple(strides), padding)
    else:
        pads = [tuple(p) for p in padding]
    if len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise ValueError(f"padding must be SAME, VALID or two (lo, hi) pairs >= 0, got {padding}")
    return (int(pads[0][0]), int(pads[0][1])), (int(pads[1][0]), int(pads[1][1]))


def pack_window_weights(q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(kh, kw, c_in, c_out)`` ±1 weights -> ``(words, wpop)`` in the kernel's layout, channels
    side by side (the kernel's vectors read them as they are):

    - ``words``: ``uint32 (L, 2 c_out)``, 64-bit word ``i`` of output channel ``co`` at
      ``[i, 2 co : 2 co + 2]`` (low, high); a channel's window is ``kh`` row segments of ``M``
      words, bit ``64 M ky + kx c_in + c``, pad bits 0;
    - ``wpop``: ``int32 (kh kw, c_out)``, the number of +1 weights per tap (the padding
      correction)."""
    kh, kw, c_in, c_out = q.shape
    seg = kw * c_in
    rows = jnp.pad(q.reshape(kh, seg, c_out), ((0, 0), (0, -seg % 64), (0, 0)), constant_values=-1)
    halves = pack_words(rows.reshape(-1, c_out), axis=0)  # (2 L, c_out); -1 pads -> 0 bits
    words = halves.reshape(-1, 2, c_out).transpose(0, 2, 1).reshape(-1, 2 * c_out)
    wpop = jnp.sum(q > 0, axis=2, dtype=jnp.int32).reshape(kh * kw, c_out)
    return words, wpop


def xnor_conv(
    x: jax.Array,
    q: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Any = "SAME",
    packed: tuple[jax.Array, jax.Array] | None = None,
    *,
    chunk_work: int = CHUNK_WORK,
    parallel_work: int = PARALLEL_WORK,
    isa: str | None = None,
) -> jax.Array:
    """``sign(x) ⊛ q`` as ``int32`` on packed bits: NHWC float ``x`` (``x >= 0`` is +1, D10),
    HWIO ±1 ``q``; equals :func:`bnnns.core.binary_ops.int_conv` of ``sign_int8(x)``.

    ``packed``: :func:`pack_window_weights` of ``q``, when computed once beforehand (else here).
    ``chunk_work``, ``parallel_work``: how the kernel splits its work over threads
    (:data:`CHUNK_WORK`, :data:`PARALLEL_WORK`); the result does not depend on them.
    ``isa``: one of :data:`bnnns.core.native.ISAS` this CPU runs (``None``: ``status().isa``, the
    best or ``$BNNNS_XNOR_ISA``), to compare the builds; the result does not depend on it.
    Needs the native kernel (:func:`bnnns.core.native.status`) and runs on CPU.
    """
    if chunk_work < 1 or parallel_work < 0:
        raise ValueError(
            f"xnor_conv: chunk_work must be >= 1 and parallel_work >= 0, "
            f"got {chunk_work}, {parallel_work}"
        )
    state = native.status()
    if not state.available:
        raise RuntimeError(f"xnor_conv needs the native CPU kernel: {state.detail}")
    if isa is not None and isa not in state.runnable:
        raise ValueError(
            f"xnor_conv: isa must be None or one of {state.runnable} here, got {isa!r}"
        )
    n, h, w, c_in = x.shape
    kh, kw, q_in, c_out = q.shape
    if q_in != c_in:
        raise ValueError(f"xnor_conv: x has {c_in} channels, the kernel {q.shape} wants {q_in}")
    (top, bottom), (left, right) = explicit_padding((h, w), (kh, kw), strides, padding)
    sh, sw = (int(s) for s in strides)
    ho, wo = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    words, wpop = pack_window_weights(q) if packed is None else packed
    call = jax.ffi.ffi_call(
        native.XNOR_CONV_TARGET, jax.ShapeDtypeStruct((n, ho, wo, c_out), jnp.int32)
    )
    attrs = {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "pad_top": top, "pad_left": left}
    attrs.update(chunk_work=chunk_work, parallel_work=parallel_work)
    attrs["isa"] = native.ISAS.index(isa or state.isa)
    return call(x.astype(jnp.float32), words, wpop, **{k: np.int64(v) for k, v in attrs.items()})


def xnor_dense(
    x: jax.Array, q: jax.Array, packed: tuple[jax.Array, jax.Array] | None = None
) -> jax.Array:
    """``sign(x) · q`` (``(..., c_in)`` float, ``(c_in, c_out)`` ±1) as ``int32``: a 1x1 conv
    (``packed``: :func:`pack_window_weights` of ``q[None, None]``)."""
    lead = x.shape[:-1]
    flat = x.reshape(-1, 1, 1, x.shape[-1])
    out = xnor_conv(flat, q[None, None], (1, 1), "VALID", packed)
    return out.reshape(*lead, q.shape[-1])
