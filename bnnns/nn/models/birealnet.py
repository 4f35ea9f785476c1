"""Bi-Real Net ResNet-18 for ImageNet (method.md §6.4, Q15)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.nn.models.common import BinaryOptions, PReLU, batch_norm, imagenet_stem

__all__ = ["BiRealNet18"]


class BiRealNet18(nn.Module):
    """Bi-Real ResNet-18: 16 one-conv blocks, each with its own real shortcut.

    Stem (real): conv 7x7/2 (64) -> BN -> maxpool 3x3/2. Stages of 4 blocks with 64/128/256/512
    channels, stride 2 in the first block of stages 2-4. Block:
    ``BN(BinConv3x3(ApproxSign(x)))`` [``-> PReLU`` per channel, the paper's "Bi-Real + PReLU"
    baseline, Q15] ``+ shortcut(x)``; downsample shortcut (real): avgpool 2/2 -> conv 1x1 ->
    BN. Head (real): global avgpool -> Dense. The binary options should use
    ``activation="approx_sign"``, ``weight_scale="channel"`` and ``weight_ste="clipped"``
    (Bi-Real's ``clamp(W, -1, 1)`` surrogate), as ``configs/imagenet_birealnet18_*`` do.
    """

    num_classes: int = 1000
    width: int = 64
    prelu: bool = True
    binary: BinaryOptions = BinaryOptions(
        activation="approx_sign", weight_scale="channel", weight_ste="clipped"
    )
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, dt, w = self.binary, self.dtype, self.width
        x = imagenet_stem(x, w, train, dt)
        for stage, features in enumerate((w, 2 * w, 4 * w, 8 * w)):
            for block in range(4):
                stride = 2 if stage > 0 and block == 0 else 1
                shortcut = x
                if stride != 1 or x.shape[-1] != features:
                    shortcut = nn.avg_pool(x, (stride, stride), (stride, stride))
                    shortcut = nn.Conv(features, (1, 1), use_bias=False, dtype=dt)(shortcut)
                    shortcut = batch_norm(train, dt)(shortcut)
                h = b.conv(features, strides=(stride, stride), padding=((1, 1), (1, 1)), dtype=dt)(
                    x
                )
                h = batch_norm(train, dt)(h)
                if self.prelu:
                    h = PReLU()(h)
                x = h + shortcut
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=dt, name="head")(x).astype(jnp.float32)
