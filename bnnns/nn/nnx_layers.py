"""Flax NNX versions of the binary layers (``bnnns.nnx``): the same functions as the linen ones.

:class:`BinaryConv`, :class:`BinaryDense` and :class:`MappingNet` are ``nnx.Module`` twins of
:mod:`bnnns.nn.layers` and :class:`bnnns.MappingNet`, built on the same pure functions of
:mod:`bnnns.core` (``ste_sign``, ``weight_scale``, ``lns_loss``, ``mapping_conv``,
``filter_bank_norm``, the integer ops) with the same options (binarizers ``sign``/``lns``/
``real``/``deployed``, estimators, scales, D1-D15 switches) and the same parameter names, so
``nnx.state(model, nnx.Param)`` is the linen ``params`` tree (:func:`to_linen_variables`).

What the linen layers sow, an NNX layer keeps as variables of its own types, filterable by type
(``nnx.state(model, AuxLoss)``): :class:`AuxLoss` (``l~_i``, Eqs. 15-17), :class:`AuxFloor`,
:class:`LabelAgreement` (all :data:`LNS`, the type ``nnx.bridge`` gives linen's ``"lns"``
collection) and :data:`BinaryWeights` (``Q``, int8). Each call overwrites them. A layer with
IR-Net's EDE keeps the training progress ``i / N`` as a :data:`TrainingProgress` variable,
which the user's train step sets (:func:`set_progress`).
:func:`collect_aux_loss` sums the auxiliary loss of native and bridged layers alike
(Eq. 21: ``L = l_cls + alpha * collect_aux_loss(model)``).

Longer than 400 lines: the NNX twins of both layers and of the mapping network, with their
variable types, must stay one module so each mirrors its linen counterpart line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bnnns.core.binary_ops import int_conv, int_dense, sign_int8
from bnnns.core.conv_dw import binary_conv
from bnnns.core.estimators import (
    DEFAULT_WEIGHT_STE,
    clip_grad_sign,
    ede_schedule,
    ede_sign,
    sign,
    ste_sign,
)
from bnnns.core.losses import check_noise_rates, lns_loss, lns_loss_floor
from bnnns.core.mapping import (
    CONV_IMPLS,
    MAPPING_DTYPES,
    MAPPING_IMPLS,
    filter_bank_norm,
    filters_to_kernel,
    kernel_to_filters,
    mapping_conv,
)
from bnnns.core.metrics import sign_agreement
from bnnns.core.scaling import SCALE_MODES, weight_scale
from bnnns.nn import layers as linen_layers
from bnnns.nn.layers import binarize_activations, scaled_output, uses_progress

__all__ = [
    "BinaryConv",
    "BinaryDense",
    "MappingNet",
    "LNS",
    "AuxLoss",
    "AuxFloor",
    "LabelAgreement",
    "BinaryWeights",
    "LNSLabels",
    "DeployedWeights",
    "TrainingProgress",
    "collect_aux_loss",
    "set_progress",
    "to_linen_variables",
]

KAIMING_NORMAL = jax.nn.initializers.kaiming_normal()  # the linen layers' kernel inits
LECUN_NORMAL = jax.nn.initializers.lecun_normal()

# The types nnx.bridge maps linen's collections to (created once, shared with the bridge).
LNS = nnx.variable_type_from_name("lns", allow_register=True)
BinaryWeights = nnx.variable_type_from_name("binary_weights", allow_register=True)
LNSLabels = nnx.variable_type_from_name("lns_labels", allow_register=True)  # D1 "pretrained"
DeployedWeights = nnx.variable_type_from_name("binary", allow_register=True)  # bits, scale
#: The training progress ``i / N`` that IR-Net's EDE reads (linen's ``"progress"`` collection).
TrainingProgress = nnx.variable_type_from_name(linen_layers.PROGRESS, allow_register=True)


class AuxLoss(LNS):
    """A layer's auxiliary loss ``l~_i`` (Eqs. 15/16, D3), from its last call."""


class AuxFloor(LNS):
    """The minimum of :class:`AuxLoss` over ``q^`` (``aux_loss - aux_floor`` is the excess)."""


class LabelAgreement(LNS):
    """The fraction of ``sign(q^) == Q~`` (D12), from the layer's last call."""


def collect_aux_loss(model: nnx.Module) -> jax.Array:
    """``sum_i l~_i`` of Eq. 21 over every LNS layer in ``model``: native layers of this
    module and linen layers under ``nnx.bridge.ToNNX`` (their sown ``"lns"`` collection).

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> from flax import nnx
        >>> layer = bnnns.nnx.BinaryDense(3, 2, weight_binarizer="lns", rngs=nnx.Rngs(0))
        >>> _ = layer(jnp.ones((1, 3)))
        >>> bool(bnnns.nnx.collect_aux_loss(layer) > 0)
        True
    """
    return linen_layers.collect_aux_loss(nnx.state(model, LNS).to_pure_dict())


_COLLECTIONS = {  # what inference and training state keep; the sown outputs are left out
    nnx.Param: "params",
    nnx.BatchStat: "batch_stats",
    LNSLabels: "lns_labels",
    DeployedWeights: "binary",
    TrainingProgress: linen_layers.PROGRESS,
}


def set_progress(model: nnx.Module, progress: jax.Array | float) -> None:
    """Set every :class:`TrainingProgress` of ``model`` (its EDE layers) to ``progress = i /
    N``, in place: the NNX form of :func:`bnnns.nn.layers.set_progress` (call it in the jitted
    train step with the step as an array; no recompilation).

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> from flax import nnx
        >>> layer = bnnns.nnx.BinaryDense(3, 2, activation="ede_sign", rngs=nnx.Rngs(0))
        >>> bnnns.nnx.set_progress(layer, 0.25)
        >>> float(layer.progress[...])
        0.25
    """
    state = nnx.state(model, TrainingProgress)
    value = jnp.asarray(progress, jnp.float32)
    nnx.update(model, jax.tree.map(lambda leaf: jnp.broadcast_to(value, leaf.shape), state))


def to_linen_variables(model: nnx.Module) -> dict[str, Any]:
    """The linen variables of ``model``: ``{"params": ..., "batch_stats": ..., ...}``, nested
    by attribute name, which is what a linen model with the same submodule names (the NNX
    layers and models here mirror linen's) takes in ``apply``, export and checkpoints.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> from flax import nnx
        >>> layer = bnnns.nnx.BinaryDense(3, 2, rngs=nnx.Rngs(0))
        >>> variables = bnnns.nnx.to_linen_variables(layer)
        >>> y = bnnns.BinaryDense(2).apply(variables, jnp.ones((1, 3)))
        >>> bool(jnp.allclose(y, layer(jnp.ones((1, 3)))))
        True
    """
    out: dict[str, Any] = {}
    for var_type, collection in _COLLECTIONS.items():
        tree = nnx.state(model, var_type).to_pure_dict()
        if jax.tree_util.tree_leaves(tree):
            out[collection] = tree
    return out


def _check(owner: str, **options: Any) -> None:
    allowed = {
        "weight_binarizer": linen_layers.WEIGHT_BINARIZERS,
        "weight_scale": SCALE_MODES,
        "weight_ste": linen_layers.WEIGHT_STES,
        "aux_reduction": linen_layers.REDUCTIONS,
        "labels": linen_layers.LABEL_SOURCES,
        "cls_grad_to_w": linen_layers.CLS_GRAD_PATHS,
        "mapping_dtype": MAPPING_DTYPES,
        "mapping_impl": MAPPING_IMPLS,
        "activation": linen_layers.ACTIVATION_ESTIMATORS,
    }
    for name, value in options.items():
        if name in allowed and value not in allowed[name]:
            raise ValueError(f"{owner}.{name} must be one of {allowed[name]}, got {value!r}")
    check_noise_rates(options["rho_pos"], options["rho_neg"])
    beta = options["swish_beta"]
    if not float(beta) > 0:
        raise ValueError(f"{owner}.swish_beta must be > 0 (SwishSign), got {beta!r}")


class _MappingConv(nnx.Module):
    """:class:`bnnns.core.mapping.MappingConv` (3x3 ``SAME``; ``kernel``, optional ``bias``)."""

    def __init__(self, c_in, features, *, use_bias, impl, kernel_init, rngs):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (3, 3, c_in, features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32)) if use_bias else None
        self.impl = impl

    def __call__(self, x: jax.Array, dtype: Any) -> jax.Array:
        bias = None if self.bias is None else self.bias[...]
        return mapping_conv(x, self.kernel[...], bias, self.impl, dtype)


class _FilterBankNorm(nnx.Module):
    """:class:`bnnns.core.mapping.FilterBankNorm` (D5): ``scale`` and ``bias`` per channel."""

    def __init__(self, features: int):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return filter_bank_norm(x, self.scale[...], self.bias[...])


class MappingNet(nnx.Module):
    """The mapping network ``f_theta`` of Eq. 4 (D5, D6) for kernels with ``channels`` input
    channels: :class:`bnnns.MappingNet` as an ``nnx.Module``, the same parameters by name
    (``Conv_0..2``, ``FilterBankNorm_0..1``). ``impl`` is one of :data:`MAPPING_IMPLS`
    (``"reference"``: plain convs with the two pre-norm biases of ``ReferenceMappingNet``).

    Example:
        >>> import jax, bnnns
        >>> from flax import nnx
        >>> net = bnnns.nnx.MappingNet(4, rngs=nnx.Rngs(0))
        >>> net(jax.random.normal(jax.random.key(1), (3, 3, 4, 8))).shape
        (3, 3, 4, 8)
    """

    def __init__(
        self,
        channels: int,
        *,
        residual: bool = False,
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if impl not in MAPPING_IMPLS:
            raise ValueError(f"MappingNet.impl must be one of {MAPPING_IMPLS}, got {impl!r}")
        c, prenorm_bias = channels, impl == "reference"
        conv_impl = "conv" if prenorm_bias else impl
        assert conv_impl in CONV_IMPLS
        lecun = LECUN_NORMAL
        last_init = jax.nn.initializers.zeros if residual else lecun
        common = dict(impl=conv_impl, rngs=rngs)
        self.Conv_0 = _MappingConv(c, 2 * c, use_bias=prenorm_bias, kernel_init=lecun, **common)
        self.FilterBankNorm_0 = _FilterBankNorm(2 * c)
        self.Conv_1 = _MappingConv(2 * c, 2 * c, use_bias=prenorm_bias, kernel_init=lecun, **common)
        self.FilterBankNorm_1 = _FilterBankNorm(2 * c)
        self.Conv_2 = _MappingConv(2 * c, c, use_bias=True, kernel_init=last_init, **common)
        self.residual, self.dtype = residual, dtype

    def __call__(self, kernel: jax.Array) -> jax.Array:
        filters = kernel_to_filters(kernel)
        dtype = jnp.dtype(self.dtype) if self.dtype is not None else kernel.dtype
        h = filters.astype(dtype)
        h = jax.nn.relu(self.FilterBankNorm_0(self.Conv_0(h, dtype)))
        h = jax.nn.relu(self.FilterBankNorm_1(self.Conv_1(h, dtype)))
        out = self.Conv_2(h, dtype)
        if self.residual:
            out = filters.astype(out.dtype) + out
        return filters_to_kernel(out, kernel.ndim).astype(kernel.dtype)


_OPTIONS = (
    *("weight_binarizer", "weight_scale", "weight_ste", "weight_clip", "activation", "act_clip"),
    *("rho_pos", "rho_neg", "aux_reduction", "labels", "residual_mapping", "cls_grad_to_w"),
    *("mapping_dtype", "mapping_impl", "dtype", "swish_beta"),
)


class _BinaryLayer(nnx.Module):
    """Weight binarization shared by :class:`BinaryConv` and :class:`BinaryDense` (Eqs. 2-4)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        in_features: int,
        *,
        weight_binarizer: str = "sign",
        weight_scale: str = "layer",
        weight_ste: str | None = None,
        weight_clip: float = 1.0,
        activation: str = "ste_sign",
        act_clip: float = 1.0,
        rho_pos: float = 0.005,
        rho_neg: float = 0.005,
        aux_reduction: str = "mean",
        labels: str = "current",
        residual_mapping: bool = False,
        cls_grad_to_w: str = "mapping",
        mapping_dtype: str = "float32",
        mapping_impl: str = "auto",
        deployed_kernel: str = "int8",
        swish_beta: float = linen_layers.SWISH_BETA,
        kernel_init: Callable,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        # None: the binarizer's default (DEFAULT_WEIGHT_STE: "clipped" for "lns", D2)
        weight_ste = weight_ste or DEFAULT_WEIGHT_STE.get(weight_binarizer, "identity")
        if deployed_kernel not in linen_layers.DEPLOYED_KERNELS:
            raise ValueError(
                f"{type(self).__name__}.deployed_kernel must be one of "
                f"{linen_layers.DEPLOYED_KERNELS}, got {deployed_kernel!r}"
            )
        # NNX deployed layers compute with int8 operands and int32 sums (the reference); the
        # packed XNOR kernel is predict's (bnnns.deploy), on the linen twin.
        options = {k: v for k, v in locals().items() if k in _OPTIONS}  # the linen fields
        _check(type(self).__name__, **options)
        for name, value in options.items():  # static attributes, as the linen fields
            setattr(self, name, value)
        if weight_binarizer == "deployed":  # §1.7: Q and s from an artifact, no latent W
            channel = weight_scale == "channel"
            scale_shape = (1,) * (len(shape) - 1) + (shape[-1],) if channel else ()
            self.bits = DeployedWeights(jnp.ones(shape, jnp.int8))
            self.scale = DeployedWeights(jnp.ones(scale_shape, jnp.float32))
        else:
            self.kernel = nnx.Param(kernel_init(rngs.params(), shape, jnp.float32))
        if weight_binarizer == "lns":
            self.mapping = MappingNet(
                shape[-2], residual=residual_mapping, dtype=mapping_dtype, impl=mapping_impl,
                rngs=rngs,
            )  # fmt: skip
            self.aux_loss = AuxLoss(jnp.zeros((), jnp.float32))
            self.aux_floor = AuxFloor(jnp.zeros((), jnp.float32))
            self.label_agreement = LabelAgreement(jnp.zeros((), jnp.float32))
            if labels == "pretrained":  # D1: frozen signs of the initial W
                self.q_tilde = LNSLabels(sign(self.kernel[...]).astype(jnp.int8))
        if weight_binarizer != "real":
            self.kernel_sign = BinaryWeights(jnp.zeros(shape, jnp.int8))
        if uses_progress(activation, weight_ste, weight_binarizer):  # IR-Net's EDE
            self.progress = TrainingProgress(jnp.zeros((), jnp.float32))
        if activation == "rsign":  # ReActNet's learnable per-channel threshold (deployed too)
            self.act_threshold = nnx.Param(jnp.zeros((in_features,), jnp.float32))

    def _weight_sign(self, x: jax.Array) -> jax.Array:
        """``sign(x)`` with the weight STE of D2, as the linen layer's ``_weight_sign``."""
        if self.weight_ste == "clip_grad":
            return clip_grad_sign(x, self.weight_clip)
        if self.weight_ste == "ede":  # IR-Net's EDE at this step's (t, k)
            return ede_sign(x, *ede_schedule(self.progress[...]))
        return ste_sign(x, None if self.weight_ste == "identity" else self.weight_clip)

    def binary_kernel(self) -> jax.Array:
        """``s * Q`` through the STE (D8, D2); the latent ``W`` for ``"real"``."""
        binary, scale = self.binary_kernel_and_scale()
        return binary if scale is None else binary * scale.astype(binary.dtype)

    def binary_kernel_and_scale(self) -> tuple[jax.Array, jax.Array | None]:
        """``(Q, s)`` of :meth:`binary_kernel` apart (``s`` None for ``"real"``); the layers
        apply ``s`` to their output, as the linen layers do
        (:meth:`bnnns.nn.layers.BinaryConv.binary_kernel_and_scale` says why)."""
        kernel = self.kernel[...]
        if self.weight_binarizer == "real":
            return kernel, None
        scale = weight_scale(kernel, self.weight_scale)
        if self.weight_binarizer == "sign":
            binary = self._weight_sign(kernel)
        else:
            q_hat = self.mapping(kernel)  # Eq. 4
            if self.labels == "current":
                q_tilde = sign(jax.lax.stop_gradient(kernel))
            else:
                q_tilde = self.q_tilde[...].astype(kernel.dtype)
            rates = (self.rho_pos, self.rho_neg, self.aux_reduction)
            self.aux_loss[...] = lns_loss(q_hat, q_tilde, *rates)
            self.aux_floor[...] = lns_loss_floor(q_tilde, *rates)
            self.label_agreement[...] = sign_agreement(q_hat, q_tilde)
            if self.cls_grad_to_w == "mapping":
                cls_path = q_hat
            else:  # D14: dl_cls/dQ^ straight to W; theta through the mapping
                q_theta = self.mapping(jax.lax.stop_gradient(kernel))
                cls_path = q_theta + (kernel - jax.lax.stop_gradient(kernel)).astype(q_theta.dtype)
            binary = self._weight_sign(cls_path)  # D2
        self.kernel_sign[...] = binary.astype(jnp.int8)
        return binary, scale

    def forward(self, x: jax.Array, op: Callable, int_op: Callable, accumulate: bool) -> Any:
        dtype = self.dtype or x.dtype
        if self.weight_binarizer != "deployed":
            binary, scale = self.binary_kernel_and_scale()
            threshold = self.act_threshold[...] if self.activation == "rsign" else None
            progress = self.progress[...] if hasattr(self, "progress") else None
            xb = binarize_activations(
                x.astype(dtype),
                self.activation,
                self.act_clip,
                threshold,
                swish_beta=self.swish_beta,
                progress=progress,
            )
            return scaled_output(op(xb, binary.astype(dtype)), scale)
        bits, scale = self.bits[...], self.scale[...]
        self.kernel_sign[...] = bits
        if self.activation == "none":
            if accumulate:
                raise ValueError(f"{type(self).__name__}: real inputs have no integer accumulator")
            return scaled_output(op(x.astype(dtype), bits.astype(dtype)), scale)
        x = x.astype(dtype)
        if self.activation == "rsign":  # ReActNet: the learned threshold, before the sign
            x = x - self.act_threshold[...].astype(dtype)
        acc = int_op(sign_int8(x), bits)
        if accumulate:
            return acc, scale
        return (acc.astype(jnp.float32) * scale).astype(dtype)


class BinaryConv(_BinaryLayer):
    """:class:`bnnns.BinaryConv` as an ``nnx.Module``: ``BinaryConv(in_features, out_features,
    kernel_size=(3, 3), strides=(1, 1), padding="SAME", feature_group_count=1, *, rngs,
    **options)`` with the linen layer's options (``weight_binarizer``, ``activation``, ...).

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> from flax import nnx
        >>> layer = bnnns.nnx.BinaryConv(4, 8, strides=(2, 2), rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((2, 5, 5, 4))).shape
        (2, 3, 3, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int] = (3, 3),
        strides: Sequence[int] = (1, 1),
        padding: Any = "SAME",
        feature_group_count: int = 1,
        *,
        kernel_init: Callable = KAIMING_NORMAL,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        kh, kw = kernel_size
        shape = (kh, kw, in_features // feature_group_count, out_features)
        super().__init__(shape, in_features, kernel_init=kernel_init, rngs=rngs, **options)
        self.strides, self.padding = tuple(strides), padding
        self.feature_group_count = feature_group_count

    def __call__(self, x: jax.Array, accumulate: bool = False) -> Any:
        groups = self.feature_group_count
        conv = lambda b, w: binary_conv(b, w, self.strides, self.padding, groups)
        int_op = lambda b, q: int_conv(b, q, self.strides, self.padding, groups)
        return self.forward(x, conv, int_op, accumulate)


class BinaryDense(_BinaryLayer):
    """:class:`bnnns.BinaryDense` as an ``nnx.Module``: ``BinaryDense(in_features,
    out_features, *, rngs, **options)``; each output unit's weights are one 1x1 filter image
    of the mapping network (D6).

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> from flax import nnx
        >>> bnnns.nnx.BinaryDense(5, 3, rngs=nnx.Rngs(0))(jnp.ones((2, 5))).shape
        (2, 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kernel_init: Callable = LECUN_NORMAL,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        shape = (in_features, out_features)
        super().__init__(shape, in_features, kernel_init=kernel_init, rngs=rngs, **options)

    def __call__(self, x: jax.Array, accumulate: bool = False) -> Any:
        return self.forward(x, jnp.matmul, int_dense, accumulate)
