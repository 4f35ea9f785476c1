"""The learned binarization mapping ``q^ = f_theta(W)`` of Eq. 4 (method.md §2, D5, D6)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "MappingNet",
    "ReferenceMappingNet",
    "make_mapping_net",
    "MAPPING_IMPLS",
    "MappingConv",
    "FilterBankNorm",
    "filter_bank_norm",
    "mapping_conv",
    "CONV_IMPLS",
    "MAPPING_DTYPES",
    "valid_taps_conv",
    "auto_conv",
    "same_conv",
    "drop_prenorm_biases",
    "kernel_to_filters",
    "filters_to_kernel",
]

CONV_IMPLS = ("auto", "valid_taps", "conv")
# "auto": the valid-taps conv where it measured faster on a 2-core CPU (docs/bench.md): 1x1
# filter images (one tap: a matmul) and convs with c_in * c_out >= 128 * 256; below that
# XLA's conv is as fast or faster and compiles 3-5x quicker.
AUTO_MIN_CHANNEL_PRODUCT = 128 * 256
MAPPING_DTYPES = ("float32", "bfloat16")
# How a binary layer builds its mapping network (:func:`make_mapping_net`): a conv_impl of
# MappingNet, or "reference", the network before issue 11 (:class:`ReferenceMappingNet`).
MAPPING_IMPLS = (*CONV_IMPLS, "reference")


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
        return filter_bank_norm(x, scale, bias, self.epsilon)


def filter_bank_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-5
) -> jax.Array:
    """:class:`FilterBankNorm`'s function: normalise ``x (c_out, kh, kw, c)`` over its first
    three axes in float32, then ``* scale + bias`` per channel (D5); ``x``'s dtype kept."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))
    y = (x32 - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
    return y.astype(x.dtype)


def same_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 ``SAME`` conv of ``x (n, h, w, c_in)`` with ``kernel (kh, kw, c_in, c_out)``:
    ``lax.conv_general_dilated``, what ``nn.Conv(padding="SAME")`` computes (the reference)."""
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _tap_ranges(size: int, ksize: int) -> Iterator[tuple[int, int, int, int]]:
    """Along one axis of a ``SAME`` conv: for each tap ``d`` with at least one valid output,
    ``(d, start, stop, shift)``: outputs ``start:stop`` read inputs ``start+shift:stop+shift``."""
    lo = (ksize - 1) // 2  # SAME pads (ksize - 1) // 2 before (lax's convention)
    for d in range(ksize):
        shift = d - lo
        start, stop = max(0, -shift), min(size, size - shift)
        if start < stop:
            yield d, start, stop, shift


def valid_taps_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """:func:`same_conv` computed from its valid ``(output position, tap)`` pairs only.

    A 3x3 ``SAME`` conv over a ``k x k`` image multiplies padding in all but ``(3k - 2)^2`` of
    its ``9 k^2`` pairs (49 of 81 for 3x3 filters, 1 of 9 for 1x1, 169 of 225 for 5x5). Here each
    tap is one matmul over the rectangle of outputs it reaches, accumulated in float32 (at
    least the inputs' precision), so the padding is never multiplied. Same function as
    :func:`same_conv` up to float summation order, for any image and odd kernel size.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
        >>> w = jax.random.normal(jax.random.key(1), (3, 3, 2, 5))
        >>> bool(jnp.allclose(valid_taps_conv(x, w), same_conv(x, w), atol=1e-5))
        True
    """
    n, h, w, _ = x.shape
    kh, kw, _, c_out = kernel.shape
    dtype = jnp.result_type(x.dtype, kernel.dtype)
    acc = jnp.promote_types(dtype, jnp.float32)
    out = jnp.zeros((n, h, w, c_out), acc)
    for dy, y0, y1, sy in _tap_ranges(h, kh):
        for dx, x0, x1, sx in _tap_ranges(w, kw):
            patch = x[:, y0 + sy : y1 + sy, x0 + sx : x1 + sx, :]
            y = jnp.einsum("nhwc,cd->nhwd", patch, kernel[dy, dx], preferred_element_type=acc)
            out = out.at[:, y0:y1, x0:x1, :].add(y)
    return out.astype(dtype)


def auto_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """:func:`valid_taps_conv` or :func:`same_conv`, whichever measured faster for the shape
    (:data:`AUTO_MIN_CHANNEL_PRODUCT`); the same function either way."""
    c_in, c_out = kernel.shape[-2:]
    if x.shape[1:3] == (1, 1) or c_in * c_out >= AUTO_MIN_CHANNEL_PRODUCT:
        return valid_taps_conv(x, kernel)
    return same_conv(x, kernel)


_CONVS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "auto": auto_conv,
    "valid_taps": valid_taps_conv,
    "conv": same_conv,
}


class MappingConv(nn.Module):
    """The 3x3, stride-1, ``SAME`` conv of :class:`MappingNet` over a bank of filter images.

    Parameters as ``nn.Conv(features, (3, 3), padding="SAME")``: ``kernel (3, 3, c, features)``
    (float32, lecun-normal by default) and, with ``use_bias``, ``bias (features,)`` (zeros).
    ``impl``: ``"auto"`` (default: :func:`auto_conv`, the faster of the two per shape,
    docs/bench.md), ``"valid_taps"`` (:func:`valid_taps_conv`) or ``"conv"``
    (:func:`same_conv`, the plain conv); the same function.
    ``dtype``: compute dtype (``None``: the input's); parameters stay float32.
    """

    features: int
    use_bias: bool = True
    impl: str = "auto"
    dtype: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in _CONVS:
            raise ValueError(f"MappingNet.conv_impl must be one of {CONV_IMPLS}, got {self.impl!r}")
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return mapping_conv(x, kernel, bias, self.impl, self.dtype)


def mapping_conv(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, impl: str = "auto", dtype: Any = None
) -> jax.Array:
    """:class:`MappingConv`'s function: the ``SAME`` conv ``impl`` of ``x`` with ``kernel``,
    plus ``bias`` (or none), computed in ``dtype`` (``None``: ``x``'s)."""
    dtype = jnp.dtype(dtype) if dtype is not None else x.dtype
    y = _CONVS[impl](x.astype(dtype), kernel.astype(dtype))
    return y if bias is None else y + bias.astype(dtype)


class MappingNet(nn.Module):
    """The mapping network ``f_theta`` of one binarized layer (Eq. 4; method.md §2, D5, D6).

    Architecture (as published, D6): conv3x3 ``c -> 2c``, norm, ReLU, conv3x3 ``2c -> 2c``,
    norm, ReLU, conv3x3 ``2c -> c``; stride 1, SAME padding, so each output filter has the shape
    of its input filter. ``c`` is the binarized layer's number of input channels and each of its
    ``c_out`` filters is one sample. The norm is :class:`FilterBankNorm` (D5). The conv weights
    number ``72 c^2``, plus ``c`` biases (last conv) and ``8c`` norm parameters. The two convs
    followed by the norm have no bias: its mean removes any per-channel constant, so a bias
    there cannot change ``q^`` (networks saved with them: :func:`drop_prenorm_biases`).

    ``conv_impl``: ``"valid_taps"`` skips the (position, tap) pairs that read the SAME padding
    (:func:`valid_taps_conv`); ``"conv"`` is the plain ``lax`` conv; ``"auto"`` (default)
    picks the faster per conv (:func:`auto_conv`). Same parameters, same function.

    ``dtype``: compute dtype of the convs (``None``: the kernel's; ``"bfloat16"`` for GPU/TPU,
    config ``lns.mapping_dtype``); parameters stay float32, FilterBankNorm's statistics are
    float32, and ``q^`` has the kernel's dtype.

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
    dtype: Any = None  # compute dtype; None = the kernel's dtype
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, kernel: jax.Array) -> jax.Array:
        filters = kernel_to_filters(kernel)
        dtype = jnp.dtype(self.dtype) if self.dtype is not None else kernel.dtype
        c = filters.shape[-1]

        def conv(features: int, i: int, **kw: Any) -> MappingConv:
            # named as nn.Conv would be, so parameter paths stay Conv_0..Conv_2
            return MappingConv(features, impl=self.conv_impl, dtype=dtype, name=f"Conv_{i}", **kw)

        h = filters.astype(dtype)
        h = nn.relu(FilterBankNorm()(conv(2 * c, 0, use_bias=False)(h)))
        h = nn.relu(FilterBankNorm()(conv(2 * c, 1, use_bias=False)(h)))
        last_init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
        out = conv(c, 2, kernel_init=last_init)(h)
        if self.residual:
            out = filters.astype(out.dtype) + out
        return filters_to_kernel(out, kernel.ndim).astype(kernel.dtype)


class ReferenceMappingNet(nn.Module):
    """The mapping network as it was before issue 11, kept verbatim as a reference.

    ``nn.Conv`` (the plain ``lax`` conv over the padded 3x3 images) with a bias on all three
    convs. Same function as :class:`MappingNet` (the pre-norm biases cancel in
    :class:`FilterBankNorm`); its parameter tree has the two extra ``bias`` leaves
    (:func:`drop_prenorm_biases` converts it). Benchmarks and tests compare against it.
    """

    residual: bool = False
    dtype: Any = None  # compute dtype; None = the kernel's dtype

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


def make_mapping_net(
    impl: str = "auto", *, residual: bool = False, dtype: Any = None, name: str | None = None
) -> MappingNet | ReferenceMappingNet:
    """The mapping network of implementation ``impl`` (one of :data:`MAPPING_IMPLS`).

    ``"auto"``, ``"valid_taps"`` or ``"conv"``: :class:`MappingNet` with that ``conv_impl``;
    ``"reference"``: :class:`ReferenceMappingNet`. All compute the same function of ``W``.

    Raises:
        ValueError: ``impl`` is not one of :data:`MAPPING_IMPLS`.
    """
    if impl == "reference":
        return ReferenceMappingNet(residual=residual, dtype=dtype, name=name)
    if impl in CONV_IMPLS:
        return MappingNet(residual=residual, dtype=dtype, conv_impl=impl, name=name)
    raise ValueError(f"mapping implementation must be one of {MAPPING_IMPLS}, got {impl!r}")


PRENORM_CONVS = ("Conv_0", "Conv_1")


def drop_prenorm_biases(tree: Any, mapping_name: str = "mapping") -> Any:
    """Convert a tree saved before the pre-norm biases were dropped (params, or an optimizer
    state holding param-shaped trees): remove every ``<mapping_name>/Conv_0/bias`` and
    ``<mapping_name>/Conv_1/bias`` leaf. Exact: those biases cannot change ``q^`` (the
    FilterBankNorm after them subtracts its mean), so the converted network computes the same
    function. For one MappingNet's own parameters wrap them: ``{"mapping": params}``.

    Example:
        >>> old = {"layer": {"mapping": {"Conv_0": {"kernel": 1, "bias": 2},
        ...                              "Conv_2": {"kernel": 3, "bias": 4}}}}
        >>> drop_prenorm_biases(old)
        {'layer': {'mapping': {'Conv_0': {'kernel': 1}, 'Conv_2': {'kernel': 3, 'bias': 4}}}}
    """

    prenorm = {(mapping_name, conv) for conv in PRENORM_CONVS}

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, Mapping):
            return {
                k: walk(v, (*path, k))
                for k, v in node.items()
                if not (k == "bias" and path[-2:] in prenorm)
            }
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # NamedTuple (optax states)
            return type(node)(*(walk(v, path) for v in node))
        if isinstance(node, list | tuple):
            return type(node)(walk(v, path) for v in node)
        return node

    return walk(tree, ())
