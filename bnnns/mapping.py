"""The learned binarization mapping ``q^ = f_theta(W)`` of Eq. 4 (method.md §2, D5, D6)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MappingNet", "FilterBankNorm", "kernel_to_filters", "filters_to_kernel"]


def kernel_to_filters(kernel: jax.Array) -> jax.Array:
    """Flax kernel -> batch of filter "images" ``(c_out, kh, kw, c_in)`` (method.md §2).

    A conv kernel ``(kh, kw, c_in, c_out)`` becomes ``c_out`` images of ``kh x kw`` pixels with
    ``c_in`` channels; a dense kernel ``(c_in, c_out)`` becomes ``c_out`` 1x1 images (D6).
    """
    if kernel.ndim == 4:
        return jnp.transpose(kernel, (3, 0, 1, 2))
    if kernel.ndim == 2:
        return jnp.transpose(kernel)[:, None, None, :]
    raise ValueError(
        "MappingNet expects a conv kernel (kh, kw, c_in, c_out) or a dense kernel "
        f"(c_in, c_out), got shape {kernel.shape}"
    )


def filters_to_kernel(filters: jax.Array, kernel_ndim: int) -> jax.Array:
    """Inverse of :func:`kernel_to_filters`."""
    if kernel_ndim == 4:
        return jnp.transpose(filters, (1, 2, 3, 0))
    return jnp.transpose(filters[:, 0, 0, :])


class FilterBankNorm(nn.Module):
    """Batch normalisation whose batch is always the layer's whole filter bank (D5).

    Statistics are over axes ``(filter, kh, kw)`` of the ``(c_out, kh, kw, c)`` activations,
    computed every call in float32, so the mapping is a pure function of ``(theta, W)``: no
    running averages, no mutable collection and no train/eval gap.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(x.dtype)


class MappingNet(nn.Module):
    """The mapping network ``f_theta`` of one binarized layer (Eq. 4; method.md §2, D5, D6).

    Architecture (as published, D6): conv3x3 ``c -> 2c``, norm, ReLU, conv3x3 ``2c -> 2c``,
    norm, ReLU, conv3x3 ``2c -> c``; stride 1, SAME padding, so each output filter has the shape
    of its input filter. ``c`` is the binarized layer's number of input channels and each of its
    ``c_out`` filters is one sample. The norm is :class:`FilterBankNorm` (D5). The conv weights
    number ``72 c^2``, plus ``5c`` biases and ``8c`` norm parameters.

    ``residual=True`` (D6 option, an ablation, not the paper): ``q^ = W + g(W)`` with the last
    conv of ``g`` zero-initialised, so ``sign(q^) = sign(W)`` exactly at initialisation.

    Example:
        >>> import jax, bnnns
        >>> kernel = jax.random.normal(jax.random.key(0), (3, 3, 4, 8))  # HWIO
        >>> net = bnnns.MappingNet()
        >>> params = net.init(jax.random.key(1), kernel)
        >>> net.apply(params, kernel).shape
        (3, 3, 4, 8)
    """

    residual: bool = False
    dtype: jnp.dtype | None = None  # compute dtype; None = the kernel's dtype

    @nn.compact
    def __call__(self, kernel: jax.Array) -> jax.Array:
        filters = kernel_to_filters(kernel)
        dtype = self.dtype or kernel.dtype
        c = filters.shape[-1]
        conv = lambda features, **kw: nn.Conv(  # noqa: E731
            features, (3, 3), padding="SAME", dtype=dtype, param_dtype=jnp.float32, **kw
        )
        h = filters.astype(dtype)
        h = nn.relu(FilterBankNorm()(conv(2 * c)(h)))
        h = nn.relu(FilterBankNorm()(conv(2 * c)(h)))
        last_init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
        out = conv(c, kernel_init=last_init)(h)
        if self.residual:
            out = filters.astype(out.dtype) + out
        return filters_to_kernel(out, kernel.ndim).astype(kernel.dtype)
