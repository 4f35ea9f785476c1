"""NNX twins of registered models, for training in NNX and exporting like a linen run.

:class:`BinaryMLP` is :class:`bnnns.nn.models.mnist.BinaryMLP` (``create_model("mlp")``) as an
``nnx.Module`` of :mod:`bnnns.nn.nnx_layers`, with the linen submodule names (``stem``,
``BatchNorm_i``, ``BinaryDense_i``, ``head``), so :func:`bnnns.nnx.to_linen_variables` of it is
the linen model's variables: the linen model evaluates them, :mod:`bnnns.deploy.export_nnx`
exports them to ``.bnn`` and :func:`bnnns.deploy.inference.predict` runs the artifact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bnnns.nn.models.common import BinaryOptions
from bnnns.nn.nnx_layers import BinaryDense

__all__ = ["BinaryMLP"]


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """:func:`bnnns.nn.models.common.batch_norm` (momentum 0.9, eps 1e-5) in NNX."""
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BinaryMLP(nnx.Module):
    """``flatten -> Dense(h) -> BN -> [BinDense(h) -> BN] x depth -> Dense(num_classes)``.

    ``in_features`` is ``H * W * C`` of the images; ``binary`` the options of every binary
    layer. Train mode (batch statistics) by default; ``model.eval()`` uses the running ones,
    as linen's ``train=False``.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> from flax import nnx
        >>> model = bnnns.nnx.BinaryMLP(36, hidden=8, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 6, 6, 1))).shape
        (2, 10)
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int = 10,
        hidden: int = 256,
        depth: int = 2,
        binary: BinaryOptions = BinaryOptions(),  # noqa: B008 (a frozen dataclass)
        dtype: Any = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.depth, self.dtype = depth, dtype
        self.stem = nnx.Linear(in_features, hidden, use_bias=False, rngs=rngs)
        self.BatchNorm_0 = _batch_norm(hidden, rngs)
        options = dataclasses.asdict(binary)
        for i in range(depth):
            setattr(
                self,
                f"BinaryDense_{i}",
                BinaryDense(hidden, hidden, dtype=dtype, rngs=rngs, **options),
            )
            setattr(self, f"BatchNorm_{i + 1}", _batch_norm(hidden, rngs))
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        if self.dtype is not None:
            x = x.astype(self.dtype)
        x = self.BatchNorm_0(self.stem(x))
        for i in range(self.depth):
            x = getattr(self, f"BatchNorm_{i + 1}")(getattr(self, f"BinaryDense_{i}")(x))
        return self.head(x).astype(jnp.float32)
