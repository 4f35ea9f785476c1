"""An NHWC / HWIO convolution whose weight gradient is the native CPU kernel (issue 17).

XLA:CPU computes a convolution's weight gradient as another convolution with the batch as its
contraction dimension, and copies the activations to ``[C, H, W, N]`` for it (22% of the
binary ResNet-20 step, docs/bench.md). :func:`conv` is ``lax.conv_general_dilated`` in its
forward pass and its input gradient; its weight gradient is ``bnnns_conv_dw``
(:mod:`bnnns.core.native`), which reads the NHWC activations and the cotangent in place:

    dw[ky, kx, ci, co] = sum_{n, oy, ox} x[n, oy sh + ky - pad_top, ox sw + kx - pad_left, ci]
                                         * g[n, oy, ox, co]

(float32 sums; zero outside the image). The same function as XLA's, to float rounding.

:func:`binary_conv` is the convolution of bnnns' binary layers in training: with
``$BNNNS_CONV_DW=native`` this one where it applies (:func:`uses_native`: JAX on one CPU
device, the native kernel built, no feature groups), else XLA's. On several devices XLA would
replicate the custom call's operands, so there the weight gradient stays XLA's. It is off by
default: its float rounding differs from XLA's, and the default MNIST job's LNS figure moves by
points under rounding-level changes (``configs/mnist_lns.py``: 96.26% with it against 97.99%
without, on one Intel Xeon; docs/bench.md).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnnns.core import native
from bnnns.core.xnor_conv import explicit_padding

__all__ = ["CONV_DW_ENV", "binary_conv", "conv", "uses_native", "weight_grad"]

_NHWC = ("NHWC", "HWIO", "NHWC")
# Chunks of output rows, each with its own float32 sums (added in chunk order): enough to keep
# XLA's intra-op pool busy on a few cores, few enough that the sums stay small.
CHUNKS = 8
CONV_DW_ENV = "BNNNS_CONV_DW"
_CHOICES = ("xla", "native")


def weight_grad(
    x: jax.Array,
    g: jax.Array,
    kernel_hw: Sequence[int],
    strides: Sequence[int] = (1, 1),
    padding: Any = "SAME",
    chunks: int = CHUNKS,
) -> jax.Array:
    """``d sum(conv(x, w) * g) / dw`` for NHWC ``x`` and cotangent ``g``: ``(kh, kw, ci, co)``
    float32, by the native kernel (needs :func:`bnnns.core.native.status` available, CPU)."""
    state = native.status()
    if not state.available:
        raise RuntimeError(f"conv_dw needs the native CPU kernel: {state.detail}")
    if chunks < 1:
        raise ValueError(f"conv_dw: chunks must be >= 1, got {chunks}")
    kh, kw = (int(k) for k in kernel_hw)
    (top, _), (left, _) = explicit_padding(x.shape[1:3], (kh, kw), strides, padding)
    sh, sw = (int(s) for s in strides)
    out = jax.ShapeDtypeStruct((kh, kw, x.shape[-1], g.shape[-1]), jnp.float32)
    call = jax.ffi.ffi_call(native.CONV_DW_TARGET, out, vmap_method="sequential")
    attrs = {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "pad_top": top, "pad_left": left}
    attrs["chunks"] = chunks
    return call(
        x.astype(jnp.float32), g.astype(jnp.float32), **{k: np.int64(v) for k, v in attrs.items()}
    )


def _xla_conv(x, w, strides, padding):
    return jax.lax.conv_general_dilated(x, w, tuple(strides), padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
    return _xla_conv(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
    return _xla_conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, res, g):
    x, w = res
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, w, strides, padding), x)
    (dx,) = input_vjp(g)
    dw = weight_grad(x, g, w.shape[:2], strides, padding)
    return dx, dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x: jax.Array, w: jax.Array, strides: Sequence[int] = (1, 1), padding: Any = "SAME"):
    """``lax.conv_general_dilated(x, w, strides, padding)`` (NHWC, HWIO, no groups or
    dilation) with the native weight gradient; ``padding`` as there (a string or pairs)."""
    pads = padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding)
    return _conv(x, w, tuple(int(s) for s in strides), pads)


def uses_native(feature_group_count: int = 1) -> bool:
    """Whether :func:`binary_conv` takes the native weight gradient here: ``$BNNNS_CONV_DW``
    is ``native`` (default ``xla``), JAX runs on one CPU device, the kernel is built and the
    layer has no feature groups."""
    choice = os.environ.get(CONV_DW_ENV, "xla")
    if choice not in _CHOICES:
        raise ValueError(f"${CONV_DW_ENV} must be one of {_CHOICES}, got {choice!r}")
    if choice == "xla" or feature_group_count != 1 or not native.status().available:
        return False
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def binary_conv(
    b: jax.Array, w: jax.Array, strides: Sequence[int], padding: Any, feature_group_count: int = 1
) -> jax.Array:
    """The NHWC / HWIO convolution of a binary layer: :func:`conv` where :func:`uses_native`,
    else ``lax.conv_general_dilated`` (the same function)."""
    if uses_native(feature_group_count):
        return conv(b, w, strides, padding)
    return jax.lax.conv_general_dilated(
        b,
        w,
        window_strides=tuple(strides),
        padding=padding,
        dimension_numbers=_NHWC,
        feature_group_count=feature_group_count,
    )
