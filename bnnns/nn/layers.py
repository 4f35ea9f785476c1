"""Binary Flax layers: ``BinaryConv`` and ``BinaryDense`` (method.md §1.1-1.3, §3.1).

A binary layer keeps real latent weights ``W`` (param ``kernel``) and computes with
``B * (s * Q)`` where ``B = act(X)`` are the binarized inputs (Eq. 2) and ``Q`` the binary
weights:

- ``weight_binarizer="sign"``: ``Q = sign(W)`` through a straight-through estimator (Eq. 1, 3).
- ``weight_binarizer="lns"``: ``Q = sign(q^)``, ``q^ = MappingNet(W)`` (Eq. 4; D2), with the
  clipped STE from the layer back to ``q^`` by default (D2: ``1{|q^| <= weight_clip}``,
  Eq. 3; :data:`bnnns.core.estimators.DEFAULT_WEIGHT_STE`). The layer also computes its
  auxiliary loss ``l~_i`` of Eqs. 15/17 between ``q^`` and the noisy labels ``Q~`` (D1) and
  sows it, with the label agreement, into the ``"lns"`` collection, so a train step forms
  ``L = l_cls + alpha * sum_i l~_i`` (Eq. 21) without knowing the model
  (:func:`collect_aux_loss`).
- ``weight_binarizer="real"`` (the float reference): no binarization; the layer computes with
  its latent ``W`` as it is (no sign, no scale, no mapping network). With
  ``activation="none"`` a model of such layers is the plain float network of the same shape.
- ``weight_binarizer="deployed"`` (inference only, §1.7): no latent weights and no mapping
  network; ``Q`` (``int8`` ±1, variable ``"binary"/"bits"``) and the scale ``s`` (D8,
  ``"binary"/"scale"``) come from an exported artifact (:mod:`bnnns.deploy.export`), and the layer
  computes ``s * (sign(X) ⊛ Q)`` exactly in integer arithmetic: ``int8`` operands with ``int32``
  sums (``deployed_kernel="int8"``, :mod:`bnnns.core.binary_ops`, the reference, any platform)
  or XNOR-popcount on packed bits (``"xnor"``, :mod:`bnnns.core.xnor_conv`, the native CPU
  kernel; grouped convs stay ``int8``).

IR-Net's EDE (``activation="ede_sign"``, ``weight_ste="ede"``) moves its ``(t, k)`` with the
training progress ``i / N``: a scalar variable ``"progress"/"progress"`` of each such layer
(created 0 by ``init``), which the train step sets from its step counter
(:func:`set_progress`), so it enters the jitted step as an array, never a recompiling constant.

Every binary layer sows its binary weights ``sign(.)`` (int8) into ``"binary_weights"`` under
``"kernel_sign"`` (not ``"kernel"``: Flax NNX's bridge flattens all collections into one
namespace, where it would clash with the param); sow is a no-op unless that collection is
mutable, so this costs nothing in the train step and serves export and the flip-rate metric
(D12). Each sown value replaces the one before (a 1-tuple, never a growing one), so variables
that still hold what ``init`` sowed, as ``nnx.bridge.ToNNX`` keeps them, give the same sums.

Longer than 400 lines: the two layers share one binarization class, its option checks and the
deployed (int8 / packed XNOR) forward, and splitting them would scatter one decision table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.core.binary_ops import int_conv, int_dense, sign_int8
from bnnns.core.conv_dw import binary_conv
from bnnns.core.estimators import (
    DEFAULT_WEIGHT_STE,
    approx_sign,
    clip_grad_sign,
    ede_schedule,
    ede_sign,
    rsign,
    sign,
    ste_sign,
    swish_sign,
)
from bnnns.core.losses import check_noise_rates, lns_loss, lns_loss_floor
from bnnns.core.mapping import MAPPING_DTYPES, MAPPING_IMPLS, make_mapping_net
from bnnns.core.metrics import sign_agreement
from bnnns.core.scaling import SCALE_MODES, weight_scale
from bnnns.core.xnor_conv import xnor_conv, xnor_dense

__all__ = [
    "BinaryConv",
    "BinaryDense",
    "binarize_activations",
    "collect_aux_loss",
    "drop_sown",
    "set_progress",
    "uses_progress",
    "scaled_output",
    "PROGRESS",
    "SOWN_COLLECTIONS",
    "WEIGHT_BINARIZERS",
    "ACTIVATION_ESTIMATORS",
    "WEIGHT_STES",
    "MAPPING_IMPLS",
    "DEPLOYED_KERNELS",
]

WEIGHT_BINARIZERS = ("sign", "lns", "real", "deployed")
ACTIVATION_ESTIMATORS = (
    "ste_sign",
    "approx_sign",
    "swish_sign",
    "ede_sign",
    "rsign",
    "none",
    "relu",
)
SWISH_BETA = 5.0  # SwishSign's default beta (Larq's), the layers' ``swish_beta``
WEIGHT_STES = ("identity", "clipped", "clip_grad", "ede")
#: The collection (and variable name) of the training progress ``i / N`` that IR-Net's EDE
#: (``activation="ede_sign"``, ``weight_ste="ede"``) reads; the train step sets it.
PROGRESS = "progress"
DEPLOYED_KERNELS = ("int8", "xnor")
LABEL_SOURCES = ("current", "pretrained")
REDUCTIONS = ("sum", "mean")
CLS_GRAD_PATHS = ("mapping", "straight")


def binarize_activations(
    x: jax.Array,
    estimator: str,
    clip: float = 1.0,
    threshold: jax.Array | None = None,
    *,
    swish_beta: float = SWISH_BETA,
    progress: jax.Array | None = None,
) -> jax.Array:
    """``B = sign(X)`` with the chosen estimator (Eq. 2; D9); ``"none"`` leaves X real and
    ``"relu"`` gives ``max(X, 0)`` (the float reference model, with ``weight_binarizer="real"``).
    ``"rsign"`` is ``sign(X - threshold)`` (ReActNet; the layer's learnable per-channel
    ``act_threshold``); ``"swish_sign"`` uses ``swish_beta``; ``"ede_sign"`` is IR-Net's EDE at
    ``(t, k) = ede_schedule(progress)``, ``progress = i / N`` of training (a traced scalar)."""
    if estimator == "ste_sign":
        return ste_sign(x, clip)
    if estimator == "approx_sign":
        return approx_sign(x)
    if estimator == "swish_sign":
        return swish_sign(x, swish_beta)
    if estimator == "ede_sign":
        if progress is None:
            raise ValueError("activation 'ede_sign' needs the training progress (i / N)")
        return ede_sign(x, *ede_schedule(progress))
    if estimator == "rsign":
        if threshold is None:
            raise ValueError("activation 'rsign' needs its threshold (the layer's act_threshold)")
        return rsign(x, threshold)
    if estimator == "none":
        return x
    if estimator == "relu":  # the float reference's nonlinearity (no sign at all)
        return jax.nn.relu(x)
    raise ValueError(
        f"activation estimator must be one of {ACTIVATION_ESTIMATORS}, got {estimator!r}"
    )


SOWN_COLLECTIONS = ("lns", "binary_weights")
BINARY_WEIGHTS_KEY = "kernel_sign"  # the sown name of Q in "binary_weights"


def _replace(_: tuple, value: Any) -> tuple:
    """``sow``'s reduce: keep only the latest value (a 1-tuple)."""
    return (value,)


def drop_sown(variables: Any) -> dict:
    """Remove the sown collections (:data:`SOWN_COLLECTIONS`) that ``Module.init`` returns.

    ``init`` runs with every collection mutable, so it hands back one sown ``aux_loss`` per
    layer; those are outputs, not state (``apply`` replaces them). Keep only the real state.

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> layer = bnnns.BinaryDense(2, weight_binarizer="lns")
        >>> sorted(bnnns.nn.layers.drop_sown(layer.init(jax.random.key(0), jnp.ones((1, 3)))))
        ['params']
    """
    return {k: v for k, v in variables.items() if k not in SOWN_COLLECTIONS}


def uses_progress(activation: str, weight_ste: str | None, weight_binarizer: str) -> bool:
    """Whether a layer with these options reads the training progress (IR-Net's EDE on its
    activations or on its binary weights); deployed layers never do (their sign has no
    gradient)."""
    if weight_binarizer == "deployed":
        return False
    return activation == "ede_sign" or (weight_binarizer != "real" and weight_ste == "ede")


def set_progress(variables: Any, progress: jax.Array | float) -> dict:
    """``variables`` with every layer's training progress (collection :data:`PROGRESS`) set
    to ``progress = i / N`` (step ``i`` of ``N`` in the stage): what IR-Net's EDE schedule
    reads (:func:`bnnns.core.estimators.ede_schedule`). A traced scalar, so a jitted step
    sets it without recompiling; ``variables`` without that collection come back unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> from bnnns.nn.layers import set_progress
        >>> variables = {"params": {}, "progress": {"Dense_0": {"progress": jnp.zeros(())}}}
        >>> float(set_progress(variables, 0.5)["progress"]["Dense_0"]["progress"])
        0.5
    """
    if PROGRESS not in variables:
        return dict(variables)
    value = jnp.asarray(progress, jnp.float32)
    tree = jax.tree.map(lambda leaf: jnp.broadcast_to(value, leaf.shape), variables[PROGRESS])
    return {**variables, PROGRESS: tree}


def collect_aux_loss(lns_collection: Any) -> jax.Array:
    """Sum of every ``aux_loss`` sown in an ``"lns"`` collection: ``sum_i l~_i`` of Eq. 21.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> cols = {"conv1": {"aux_loss": (jnp.array(2.0),), "label_agreement": (0.9,)},
        ...         "conv2": {"aux_loss": (jnp.array(0.5),)}}
        >>> float(bnnns.collect_aux_loss(cols))
        2.5
    """
    total = jnp.zeros((), jnp.float32)
    flat = jax.tree_util.tree_flatten_with_path(lns_collection)[0]
    for path, leaf in flat:
        if any(getattr(k, "key", None) == "aux_loss" for k in path):
            total = total + jnp.asarray(leaf, jnp.float32)
    return total


class _BinaryWeights(nn.Module):
    """Shared weight binarization of :class:`BinaryConv` and :class:`BinaryDense`."""

    features: int
    weight_binarizer: str = "sign"
    weight_scale: str = "layer"
    weight_ste: str | None = None
    weight_clip: float = 1.0
    rho_pos: float = 0.005
    rho_neg: float = 0.005
    aux_reduction: str = "mean"
    labels: str = "current"
    residual_mapping: bool = False
    cls_grad_to_w: str = "mapping"
    mapping_dtype: str = "float32"
    mapping_impl: str = "auto"
    deployed_kernel: str = "int8"
    swish_beta: float = SWISH_BETA

    def _check(self) -> None:
        checks = {
            "weight_binarizer": (self.weight_binarizer, WEIGHT_BINARIZERS),
            "weight_scale": (self.weight_scale, SCALE_MODES),
            "weight_ste": (self.weight_ste, (None, *WEIGHT_STES)),
            "aux_reduction": (self.aux_reduction, REDUCTIONS),
            "labels": (self.labels, LABEL_SOURCES),
            "cls_grad_to_w": (self.cls_grad_to_w, CLS_GRAD_PATHS),
            "mapping_dtype": (self.mapping_dtype, MAPPING_DTYPES),
            "mapping_impl": (self.mapping_impl, MAPPING_IMPLS),
            "deployed_kernel": (self.deployed_kernel, DEPLOYED_KERNELS),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {allowed}, got {value!r}"
                )
        check_noise_rates(self.rho_pos, self.rho_neg)
        if not float(self.swish_beta) > 0:
            raise ValueError(
                f"{type(self).__name__}.swish_beta must be > 0 (SwishSign), got {self.swish_beta!r}"
            )

    def progress(self) -> jax.Array | None:
        """The training progress ``i / N`` (variable :data:`PROGRESS`) when this layer uses
        IR-Net's EDE, created as 0 by ``init``; else None."""
        if not uses_progress(self.activation, self.weight_ste, self.weight_binarizer):
            return None
        if self.has_variable(PROGRESS, PROGRESS):
            return self.get_variable(PROGRESS, PROGRESS)
        if not self.is_mutable_collection(PROGRESS):
            raise ValueError(
                f"{type(self).__name__}: IR-Net's EDE reads the training progress from the "
                f"variables' {PROGRESS!r} collection, which these variables lack: apply with "
                "the variables init returned (bnnns.nn.layers.set_progress sets the progress)"
            )
        zeros = lambda: jnp.zeros((), jnp.float32)  # noqa: E731
        return self.variable(PROGRESS, PROGRESS, zeros).value

    def resolved_weight_ste(self) -> str:
        """``weight_ste``, or the binarizer's default when None (:data:`DEFAULT_WEIGHT_STE`:
        ``"clipped"`` for ``"lns"``, D2; ``"identity"`` for ``"sign"``)."""
        return self.weight_ste or DEFAULT_WEIGHT_STE.get(self.weight_binarizer, "identity")

    def binary_kernel(self, kernel: jax.Array) -> jax.Array:
        """``s * Q`` (D8 scale times binary weights), differentiable through the STE; the
        latent ``W`` itself for ``weight_binarizer="real"`` (whose ``binary_weights`` are then
        ``sign(W)``, for the flip rate)."""
        binary, scale = self.binary_kernel_and_scale(kernel)
        return binary if scale is None else binary * scale.astype(binary.dtype)

    def binary_kernel_and_scale(self, kernel: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """``(Q, s)`` of :meth:`binary_kernel` apart (``s`` None for ``"real"``).

        The layers apply ``s`` to the conv's output, not to its weights: ``conv(x, Q)`` of ±1
        inputs is an exact integer in float32, so equal outputs are equal bit for bit and a
        following max-pool breaks its ties the same way whatever the conv's summation order.
        With ``s`` folded into the weights, XLA's two CPU conv paths rounded the sums of ``±s``
        differently, broke the pool's ties differently, and the first layers' gradients
        differed by 30% (docs/bench.md, "XLA:CPU flags").
        """
        self._check()
        if self.weight_binarizer == "real":
            self.sow(
                "binary_weights",
                BINARY_WEIGHTS_KEY,
                sign(kernel).astype(jnp.int8),
                reduce_fn=_replace,
            )
            return kernel, None
        scale = weight_scale(kernel, self.weight_scale)
        if self.weight_binarizer == "sign":
            binary = self._weight_sign(kernel)
        else:
            mapping = make_mapping_net(
                self.mapping_impl,
                residual=self.residual_mapping,
                dtype=self.mapping_dtype,
                name="mapping",
            )
            q_hat = mapping(kernel)  # Eq. 4
            q_tilde = self._noisy_labels(kernel)
            aux = lns_loss(q_hat, q_tilde, self.rho_pos, self.rho_neg, self.aux_reduction)
            self.sow("lns", "aux_loss", aux, reduce_fn=_replace)  # Eq. 15 / 16 (D3)
            floor = lns_loss_floor(q_tilde, self.rho_pos, self.rho_neg, self.aux_reduction)
            # min of aux_loss: aux - floor is the excess
            self.sow("lns", "aux_floor", floor, reduce_fn=_replace)
            agreement = sign_agreement(q_hat, q_tilde)
            self.sow("lns", "label_agreement", agreement, reduce_fn=_replace)
            binary = self._weight_sign(self._cls_path(mapping, kernel, q_hat))  # D2
        q = binary.astype(jnp.int8)
        self.sow("binary_weights", BINARY_WEIGHTS_KEY, q, reduce_fn=_replace)
        return binary, scale

    def _weight_sign(self, x: jax.Array) -> jax.Array:
        """``sign(x)`` with the weight STE of D2: ``"identity"`` (``g``), ``"clipped"``
        (``g * 1{|x| <= weight_clip}``), ``"clip_grad"`` (``clip(g, -c, c)``, Eq. 3 as
        printed) or ``"ede"`` (IR-Net's EDE, ``g * k t (1 - tanh^2(t x))``)."""
        ste = self.resolved_weight_ste()
        if ste == "clip_grad":
            return clip_grad_sign(x, self.weight_clip)
        if ste == "ede":  # IR-Net's EDE on the weights, at this step's (t, k)
            return ede_sign(x, *ede_schedule(self.progress()))
        return ste_sign(x, None if ste == "identity" else self.weight_clip)

    def _cls_path(self, mapping: nn.Module, kernel: jax.Array, q_hat: jax.Array) -> jax.Array:
        """What ``sign`` binarizes for the classification loss: ``q^``, whose gradient reaches
        theta and (through the mapping's Jacobian) W (``cls_grad_to_w="mapping"``), or a tensor
        equal to ``q^`` whose gradient reaches theta through the mapping and W straight through,
        as ``dl_cls/dQ^`` (Eq. 3's STE read in Algorithm 1 line 10; ``"straight"``, D14). The
        auxiliary loss reaches W through the mapping either way (Eq. 20)."""
        if self.cls_grad_to_w == "mapping":
            return q_hat
        q_theta = mapping(jax.lax.stop_gradient(kernel))  # same value; no path to W
        return q_theta + (kernel - jax.lax.stop_gradient(kernel)).astype(q_theta.dtype)

    def deployed(
        self,
        x: jax.Array,
        shape: tuple[int, ...],
        int_op: Callable,
        float_op: Callable,
        accumulate: bool,
        packed: bool = False,
    ) -> Any:
        """Deployed forward: ``s * (sign(X) ⊛ Q)`` with ``Q`` and ``s`` read from ``"binary"``.

        ``int_op`` computes ``sign(X) ⊛ Q`` with ``int32`` sums (exact) from ``int8`` ±1
        operands, or (``packed=True``, XNOR-popcount) from the float ``X`` it binarizes itself
        and the window-packed weights: ``"binary"/"xnor_words"`` and ``"xnor_wpop"`` when the
        variables hold them (packed once per artifact, :mod:`bnnns.deploy.inference`), else
        packed from ``Q`` in the call; ``float_op`` is the real-input fallback
        (``activation="none"``). ``accumulate=True`` returns ``(acc, s)`` instead of their
        product, for BN folding (:mod:`bnnns.core.binary_ops`). With ``activation="rsign"``
        the learned ``act_threshold`` (a param of the artifact) is subtracted from ``X`` before
        its sign, exactly as in training (ReActNet).
        """
        self._check()
        bits = self.variable("binary", "bits", jnp.ones, shape, jnp.int8).value
        channel = self.weight_scale == "channel"
        scale_shape = (1,) * (len(shape) - 1) + (shape[-1],) if channel else ()
        scale = self.variable("binary", "scale", jnp.ones, scale_shape, jnp.float32).value
        self.sow("binary_weights", BINARY_WEIGHTS_KEY, bits, reduce_fn=_replace)
        dtype = self.dtype or x.dtype
        if self.activation == "none":
            if accumulate:
                raise ValueError(f"{type(self).__name__}: real inputs have no integer accumulator")
            return scaled_output(float_op(x.astype(dtype), bits.astype(dtype)), scale)
        x = x.astype(dtype)
        if self.activation == "rsign":  # ReActNet: the learned threshold, before the sign
            x = x - self._act_threshold(x).astype(dtype)
        if packed:
            words = self.get_variable("binary", "xnor_words")
            wpop = self.get_variable("binary", "xnor_wpop")
            acc = int_op(x, bits, None if words is None else (words, wpop))
        else:
            acc = int_op(sign_int8(x), bits)
        if accumulate:
            return acc, scale
        return (acc.astype(jnp.float32) * scale).astype(dtype)

    def _act_threshold(self, x: jax.Array) -> jax.Array:
        """RSign's learnable per-channel threshold (param ``act_threshold``, init 0)."""
        shape = (x.shape[-1],)
        return self.param("act_threshold", nn.initializers.zeros, shape, jnp.float32)

    def activations(self, x: jax.Array) -> jax.Array:
        """``B`` of Eq. 2 by ``self.activation``; ``"rsign"`` learns ``act_threshold`` (C,)."""
        threshold = self._act_threshold(x) if self.activation == "rsign" else None
        return binarize_activations(
            x,
            self.activation,
            self.act_clip,
            threshold,
            swish_beta=self.swish_beta,
            progress=self.progress(),
        )

    def _noisy_labels(self, kernel: jax.Array) -> jax.Array:
        """``Q~`` of D1: ``sign(W)`` now (stop-gradient) or frozen signs of the initial W."""
        if self.labels == "current":
            return sign(jax.lax.stop_gradient(kernel))
        frozen = self.variable("lns_labels", "q_tilde", lambda: sign(kernel).astype(jnp.int8))
        return frozen.value.astype(kernel.dtype)


def scaled_output(y: jax.Array, scale: jax.Array | None) -> jax.Array:
    """``y * s``: the D8 scale on a layer's output (its last axis is the kernel's output axis,
    so a ``"channel"`` scale of shape ``(1, ..., 1, c_out)`` broadcasts as on the kernel)."""
    if scale is None:
        return y
    return y * scale.reshape(scale.shape[-1:] if scale.ndim else ()).astype(y.dtype)


class BinaryConv(_BinaryWeights):
    """2-D convolution with binary weights and (optionally) binary inputs (Eq. 2).

    Attributes:
      features: output channels.
      kernel_size: ``(kh, kw)``.
      strides: ``(sh, sw)``.
      padding: ``"SAME"``, ``"VALID"`` or explicit pairs, as in ``lax.conv_general_dilated``.
      activation: ``"ste_sign"`` (clipped STE, D9), ``"approx_sign"`` (Bi-Real),
        ``"swish_sign"`` (Larq's SwishSign, its ``swish_beta``, default 5), ``"ede_sign"``
        (IR-Net's EDE, its ``(t, k)`` from the training progress, variable ``"progress"``,
        :func:`set_progress`), ``"rsign"`` (ReActNet: a learnable per-channel threshold, param
        ``act_threshold``, subtracted before the sign, deployed too) or ``"none"``.
      swish_beta: SwishSign's ``beta`` (> 0; ``activation="swish_sign"`` only).
      act_clip: clip range of the activation STE.
      feature_group_count: grouped convolution (AlexNet's two-group convs, §6.2).
      weight_binarizer: ``"sign"``, ``"lns"`` (D2), ``"real"`` (the float reference: ``W`` as
        it is) or ``"deployed"`` (inference, §1.7).
      weight_scale: ``"none"``, ``"layer"`` or ``"channel"`` (D8).
      weight_ste: ``"clipped"`` (``1{|.| <= weight_clip}``), ``"identity"``,
        ``"clip_grad"`` (the gradient value clipped to ``±weight_clip``, Eq. 3 as printed) or
        ``"ede"`` (IR-Net's EDE at the training progress, as ``activation="ede_sign"``);
        ``None`` (default): the binarizer's (:data:`bnnns.core.estimators.DEFAULT_WEIGHT_STE`):
        ``"clipped"`` on ``q^`` for ``"lns"`` (D2), ``"identity"`` on ``W`` for ``"sign"``.
      rho_pos, rho_neg: noise rates of Eqs. 8-9 (D4). aux_reduction: ``"mean"`` (Eq. 16, D3
        default) or ``"sum"`` (Eq. 17). labels: ``"current"`` or ``"pretrained"`` (D1).
      residual_mapping: zero-initialised residual mapping (D6 option).
      mapping_dtype: compute dtype of the mapping network, ``"float32"`` or ``"bfloat16"``.
      mapping_impl: the mapping network's implementation (:data:`MAPPING_IMPLS`): ``"auto"``
        (default), ``"valid_taps"`` or ``"conv"`` (:class:`bnnns.MappingNet`'s ``conv_impl``),
        or ``"reference"`` (:class:`bnnns.core.mapping.ReferenceMappingNet`, the network before
        issue 11; its parameters have two more bias leaves). The same function.
      deployed_kernel: deployed only: ``"int8"`` (``int8`` conv, the reference) or ``"xnor"``
        (XNOR-popcount on packed bits, the native CPU kernel; grouped convs stay ``int8``).
      dtype: compute dtype (``None``: the input's).

    ``__call__(x, accumulate=False)``; deployed, ``accumulate=True`` returns the ``int32``
    accumulator and the scale instead of their product (BN folding, :mod:`bnnns.core.binary_ops`).

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> layer = bnnns.BinaryConv(8, weight_binarizer="lns")
        >>> x = jnp.ones((2, 5, 5, 4))
        >>> variables = bnnns.nn.layers.drop_sown(layer.init(jax.random.key(0), x))
        >>> y, cols = layer.apply(variables, x, mutable=["lns"])
        >>> y.shape, sorted(cols["lns"])
        ((2, 5, 5, 8), ['aux_floor', 'aux_loss', 'label_agreement'])
    """

    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    feature_group_count: int = 1
    activation: str = "ste_sign"
    act_clip: float = 1.0
    kernel_init: Callable = nn.initializers.kaiming_normal()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, accumulate: bool = False) -> Any:
        kh, kw = self.kernel_size
        groups = self.feature_group_count
        shape = (kh, kw, x.shape[-1] // groups, self.features)
        conv = lambda b, w: binary_conv(b, w, self.strides, self.padding, groups)  # noqa: E731
        if self.weight_binarizer == "deployed":
            packed = self.deployed_kernel == "xnor" and groups == 1
            if packed:
                int_op = lambda x, q, w: xnor_conv(x, q, self.strides, self.padding, w)  # noqa: E731
            else:
                int_op = lambda b, q: int_conv(b, q, self.strides, self.padding, groups)  # noqa: E731
            return self.deployed(x, shape, int_op, conv, accumulate, packed)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        dtype = self.dtype or x.dtype
        binary, scale = self.binary_kernel_and_scale(kernel)
        return scaled_output(conv(self.activations(x.astype(dtype)), binary.astype(dtype)), scale)


class BinaryDense(_BinaryWeights):
    """Dense layer with binary weights and (optionally) binary inputs.

    Takes the same binarization attributes as :class:`BinaryConv`. With ``weight_binarizer=
    "lns"`` each output unit's weight vector is one 1x1 "image" of the mapping network (D6).

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> layer = bnnns.BinaryDense(3)
        >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 5)))
        >>> layer.apply(variables, jnp.ones((2, 5))).shape
        (2, 3)
    """

    activation: str = "ste_sign"
    act_clip: float = 1.0
    kernel_init: Callable = nn.initializers.lecun_normal()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, accumulate: bool = False) -> Any:
        shape = (x.shape[-1], self.features)
        if self.weight_binarizer == "deployed":
            packed = self.deployed_kernel == "xnor"
            int_op = xnor_dense if packed else int_dense
            return self.deployed(x, shape, int_op, jnp.matmul, accumulate, packed)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        dtype = self.dtype or x.dtype
        binary, scale = self.binary_kernel_and_scale(kernel)
        return scaled_output(self.activations(x.astype(dtype)) @ binary.astype(dtype), scale)
