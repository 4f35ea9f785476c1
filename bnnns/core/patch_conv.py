"""A float convolution as one matrix product over its patches (im2col), for few input channels.

:func:`patch_conv` has :func:`jax.lax.conv_general_dilated`'s signature, so a Flax ``nn.Conv``
takes it as ``conv_general_dilated=``. For a 2-D NHWC/HWIO convolution without dilation or
groups it gathers every output position's ``kh * kw * c_in`` inputs by strided slices (one
concatenation along ``kw``, one along ``kh``) and multiplies them by the kernel reshaped to
``(kh * kw * c_in, c_out)``; any other convolution goes to ``lax.conv_general_dilated``. The
result equals the convolution up to float32 rounding (the sums run in another order).

Why: XLA:CPU's convolution of a 3-channel image is slow; ResNet-20's real stem conv (32x32x3 ->
16, 3x3) took 131 us at batch 1 and 10.2 ms at batch 128 as a convolution, 60 us and 6.9 ms as
patches and a product on the 2-core Zen 1 EPYC (docs/bench.md, issue 22). The deployed XNOR
path uses it for that stem (:attr:`bnnns.nn.models.common.BinaryOptions.stem_conv`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    >>> w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    >>> dn = ("NHWC", "HWIO", "NHWC")
    >>> ref = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    >>> bool(jnp.allclose(patch_conv(x, w, (1, 1), "SAME", dimension_numbers=dn), ref, atol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["patch_conv"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any) -> bool:
    if dimension_numbers is None:  # lax's default is NCHW / OIHW
        return False
    wanted = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == wanted


def patch_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated(lhs, rhs, ...)``, computed as patches x kernel where it can
    (2-D, NHWC/HWIO, no dilation, one group), else by ``lax.conv_general_dilated`` itself."""
    plain = (
        lhs.ndim == 4
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and _is_nhwc(lhs, rhs, dimension_numbers)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    kh, kw, cin, cout = rhs.shape
    sh, sw = window_strides
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (sh, sw), padding)
    (top, bottom), (left, right) = padding
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    # feature ky * kw * cin + kx * cin + c: the order of rhs.reshape(kh * kw * cin, cout)
    rows = jnp.concatenate([x[:, :, kx : kx + (wo - 1) * sw + 1 : sw] for kx in range(kw)], -1)
    cols = jnp.concatenate([rows[:, ky : ky + (ho - 1) * sh + 1 : sh] for ky in range(kh)], -1)
    y = jnp.dot(
        cols.reshape(-1, kh * kw * cin),
        rhs.reshape(kh * kw * cin, cout),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    return y.reshape(lhs.shape[0], ho, wo, cout)
