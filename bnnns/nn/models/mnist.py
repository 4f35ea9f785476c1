"""Small binary networks for MNIST-sized inputs (any H x W x C, any number of classes)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.nn.models.common import BinaryOptions, batch_norm, norm_to_sign

__all__ = ["BinaryCNN", "BinaryMLP"]


class BinaryCNN(nn.Module):
    """Real stem conv, three binary 3x3 convs with two max-pools, avgpool, a real head.

    ``stem conv(w) -> BN -> [BinConv(w) -> BN -> pool] -> [BinConv(2w) -> BN -> pool] ->
    BinConv(4w) -> BN -> flatten (or global avgpool) -> Dense(num_classes)``; the first and
    last layers are real as in every setup of the paper (§4). Pools are skipped once the map
    is below 2x2. No binary dense after the flatten: its mapping network would need
    ``72 (7*7*c)^2`` weights (method.md Q10). Deployed, the BNs of the first two binary convs
    (followed only by the next conv's sign) fold into integer thresholds (:func:`norm_to_sign`).
    """

    num_classes: int = 10
    width: int = 32
    head: str = "flatten"  # "flatten" | "avgpool" before the real Dense head
    binary: BinaryOptions = BinaryOptions()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        w, b, dt = self.width, self.binary, self.dtype
        x = nn.Conv(w, (3, 3), padding="SAME", use_bias=False, dtype=dt, name="stem")(x)
        x = batch_norm(train, dt)(x)
        for features, pool in ((w, True), (2 * w, True), (4 * w, False)):
            if pool:  # BN -> max-pool -> the next binary conv's sign
                x = norm_to_sign(b, b.conv(features, dtype=dt), x, train, dt)
            else:
                x = batch_norm(train, dt)(b.conv(features, dtype=dt)(x))
            if pool and min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), (2, 2))
        if self.head == "flatten":
            x = x.reshape((x.shape[0], -1))
        else:
            x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=dt, name="head")(x).astype(jnp.float32)


class BinaryMLP(nn.Module):
    """``flatten -> Dense(h) -> BN -> [BinDense(h) -> BN] x depth -> Dense(num_classes)``."""

    num_classes: int = 10
    hidden: int = 256
    depth: int = 2
    binary: BinaryOptions = BinaryOptions()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dt = self.dtype
        x = x.reshape((x.shape[0], -1))
        x = batch_norm(train, dt)(nn.Dense(self.hidden, use_bias=False, dtype=dt, name="stem")(x))
        for i in range(self.depth):
            layer = self.binary.dense(self.hidden, dtype=dt)
            if i + 1 < self.depth:  # BN -> the next binary dense's sign
                x = norm_to_sign(self.binary, layer, x, train, dt)
            else:
                x = batch_norm(train, dt)(layer(x))
        return nn.Dense(self.num_classes, dtype=dt, name="head")(x).astype(jnp.float32)
