"""Pieces shared by the model zoo: binarization options and small real-valued layers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.core.binary_ops import fold_norm_threshold, threshold_sign
from bnnns.core.patch_conv import patch_conv
from bnnns.nn.layers import BinaryConv, BinaryDense

__all__ = ["BinaryOptions", "BatchNorm", "batch_norm", "imagenet_stem", "norm_to_sign", "PReLU"]


@dataclasses.dataclass(frozen=True)
class BinaryOptions:
    """How every binary layer of a model binarizes (method.md Part A).

    Attributes mirror :class:`bnnns.BinaryConv`: ``weight_binarizer`` (``"sign"``/``"lns"``,
    D2; ``"real"``: the latent weights as they are, the float reference; ``"deployed"`` for
    inference from an artifact, §1.7), ``weight_scale`` (D8),
    ``weight_ste`` (D2; None: the binarizer's default, clipped for LNS), ``weight_clip``,
    ``activation`` and ``act_clip`` (D9; ``swish_beta`` for ``"swish_sign"``),
    ``rho_pos``/``rho_neg`` (D4), ``aux_reduction`` (D3), ``labels`` (D1),
    ``residual_mapping`` (D6), ``cls_grad_to_w`` (D14),
    ``mapping_dtype`` (the mapping networks' compute dtype), ``mapping_impl`` (their
    implementation, :data:`bnnns.core.mapping.MAPPING_IMPLS`), ``deployed_kernel`` (deployed
    binary layers: ``"int8"`` reference or ``"xnor"`` packed bits, :mod:`bnnns.nn.layers`).
    """

    weight_binarizer: str = "sign"
    weight_scale: str = "layer"
    weight_ste: str | None = None
    weight_clip: float = 1.0
    activation: str = "ste_sign"
    act_clip: float = 1.0
    rho_pos: float = 0.005
    rho_neg: float = 0.005
    aux_reduction: str = "mean"
    labels: str = "current"
    residual_mapping: bool = False
    mapping_dtype: str = "float32"
    cls_grad_to_w: str = "mapping"
    mapping_impl: str = "auto"
    deployed_kernel: str = "int8"
    swish_beta: float = 5.0

    @property
    def deployed(self) -> bool:
        """Inference from exported binary weights (:mod:`bnnns.deploy.inference`)."""
        return self.weight_binarizer == "deployed"

    @property
    def stem_conv(self) -> Callable[..., jax.Array]:
        """The convolution function of a real stem conv of few input channels:
        :func:`bnnns.core.patch_conv.patch_conv` on the deployed XNOR path (the CPU engine;
        ResNet-20's stem 2.2x faster at batch 1, 1.5x at 128 than XLA:CPU's convolution on a
        Zen 1 EPYC, docs/bench.md), else
        ``lax.conv_general_dilated``. Both give the same values up to float32 rounding."""
        if self.deployed and self.deployed_kernel == "xnor":
            return patch_conv
        return jax.lax.conv_general_dilated

    def without_mapping(self) -> BinaryOptions:
        """These options with plain ``sign`` instead of LNS: for binary FC layers whose mapping
        network would be infeasible (method.md Q10). Deployed stays deployed."""
        if self.weight_binarizer != "lns":
            return self
        return dataclasses.replace(self, weight_binarizer="sign")

    def conv(self, features: int, *, dtype: Any = None, **kwargs: Any) -> BinaryConv:
        """A :class:`BinaryConv` with these options (``kwargs`` override them)."""
        return BinaryConv(features, **{**dataclasses.asdict(self), "dtype": dtype, **kwargs})

    def dense(self, features: int, *, dtype: Any = None, **kwargs: Any) -> BinaryDense:
        """A :class:`BinaryDense` with these options (``kwargs`` override them)."""
        return BinaryDense(features, **{**dataclasses.asdict(self), "dtype": dtype, **kwargs})


class BatchNorm(nn.BatchNorm):
    """``flax.linen.BatchNorm`` (same name and variables) that can also fold itself into the
    integer threshold of the sign that follows it (:func:`norm_to_sign`)."""

    def sign_of_accumulator(self, acc: jax.Array, scale: jax.Array) -> jax.Array:
        """``sign(BN(scale * acc))`` as ``±1`` from the integer accumulator of the binary layer
        before this BN, through a per-channel integer threshold (inference only)."""
        gamma = self.get_variable("params", "scale")
        beta = self.get_variable("params", "bias")
        mean = self.get_variable("batch_stats", "mean")
        var = self.get_variable("batch_stats", "var")
        if any(v is None for v in (gamma, beta, mean, var)):
            raise ValueError(f"BatchNorm {self.name}: folding needs its trained variables")
        channel_scale = jnp.reshape(scale, (-1,))
        direction, threshold = fold_norm_threshold(
            channel_scale, gamma, beta, mean, var, self.epsilon
        )
        return threshold_sign(acc, direction, threshold)


def batch_norm(train: bool, dtype: Any = None, name: str | None = None) -> BatchNorm:
    """BatchNorm as used after every conv (momentum 0.9, eps 1e-5, PyTorch-like)."""
    return BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
    )


def imagenet_stem(x: jax.Array, width: int, train: bool, dtype: Any = None) -> jax.Array:
    """ResNet's real ImageNet stem: conv 7x7/2 (``width``) -> BN -> maxpool 3x3/2, no ReLU (the
    next layer takes the sign of its input, as in Bi-Real, §6.4). Call it inside a module's
    ``nn.compact`` method: its layers are that module's ``stem`` and first ``BatchNorm``."""
    x = nn.Conv(width, (7, 7), (2, 2), padding=3, use_bias=False, dtype=dtype, name="stem")(x)
    x = batch_norm(train, dtype)(x)
    return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


def norm_to_sign(
    binary: BinaryOptions, layer: nn.Module, x: jax.Array, train: bool, dtype: Any = None
) -> jax.Array:
    """``BN(layer(x))`` for a BN whose output goes **only** to the next binary layer's sign
    (possibly through a max-pool, which commutes with sign).

    Training and eval: exactly ``batch_norm(train, dtype)(layer(x))``. Deployed (§1.7): the BN
    is folded into a per-channel integer threshold on the layer's ``int32`` accumulator and
    the result is already the next layer's ``±1`` input (as ``dtype``), with no float
    BatchNorm. The BN is created in the caller's scope, so its name is unchanged. With
    ``activation="rsign"`` the BN stays float (deployed too): the next layer subtracts its
    learned threshold from this output before its sign (ReActNet, docs/deploy.md).
    """
    norm = batch_norm(train, dtype)
    # real inputs: nothing to fold; rsign: the next layer's threshold comes before its sign
    if not binary.deployed or binary.activation in ("none", "rsign"):
        return norm(layer(x))
    acc, scale = layer(x, accumulate=True)
    return norm.sign_of_accumulator(acc, scale).astype(dtype or jnp.float32)


class PReLU(nn.Module):
    """Per-channel PReLU (slope init 0.25, as PyTorch), for Bi-Real + PReLU (method.md Q15)."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param(
            "slope", nn.initializers.constant(self.init_slope), (x.shape[-1],), jnp.float32
        )
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)
