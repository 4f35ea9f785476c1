"""Pieces shared by the model zoo: binarization options and small real-valued layers."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.layers import BinaryConv, BinaryDense

__all__ = ["BinaryOptions", "batch_norm", "PReLU"]


@dataclasses.dataclass(frozen=True)
class BinaryOptions:
    """How every binary layer of a model binarizes (method.md Part A).

    Attributes mirror :class:`bnnns.BinaryConv`: ``weight_binarizer`` (``"sign"``/``"lns"``,
    D2), ``weight_scale`` (D8), ``weight_ste`` (D2), ``weight_clip``, ``activation`` and
    ``act_clip`` (D9), ``rho_pos``/``rho_neg`` (D4), ``aux_reduction`` (D3), ``labels`` (D1),
    ``residual_mapping`` (D6), ``mapping_dtype`` (the mapping networks' compute dtype).
    """

    weight_binarizer: str = "sign"
    weight_scale: str = "layer"
    weight_ste: str = "identity"
    weight_clip: float = 1.0
    activation: str = "ste_sign"
    act_clip: float = 1.0
    rho_pos: float = 0.005
    rho_neg: float = 0.005
    aux_reduction: str = "mean"
    labels: str = "current"
    residual_mapping: bool = False
    mapping_dtype: str = "float32"

    def conv(self, features: int, *, dtype: Any = None, **kwargs: Any) -> BinaryConv:
        """A :class:`BinaryConv` with these options (``kwargs`` override them)."""
        return BinaryConv(features, **{**dataclasses.asdict(self), "dtype": dtype, **kwargs})

    def dense(self, features: int, *, dtype: Any = None, **kwargs: Any) -> BinaryDense:
        """A :class:`BinaryDense` with these options (``kwargs`` override them)."""
        return BinaryDense(features, **{**dataclasses.asdict(self), "dtype": dtype, **kwargs})


def batch_norm(train: bool, dtype: Any = None, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm as used after every conv (momentum 0.9, eps 1e-5, PyTorch-like)."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
    )


class PReLU(nn.Module):
    """Per-channel PReLU (slope init 0.25, as PyTorch), for Bi-Real + PReLU (method.md Q15)."""

    init_slope: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param(
            "slope", nn.initializers.constant(self.init_slope), (x.shape[-1],), jnp.float32
        )
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)
