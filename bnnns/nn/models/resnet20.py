"""Binary CIFAR ResNet-20 (method.md §6.6, D11, Q8)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.nn.models.common import BinaryOptions, batch_norm, norm_to_sign

__all__ = ["ResNet20"]

BLOCKS = ("birealish", "classic")
SHORTCUTS = ("A", "B")


class ResNet20(nn.Module):
    """ResNet-20: real stem conv(16)+BN, 3 stages x 3 blocks (16/32/64), avgpool, real Dense.

    ``block="birealish"`` (D11 default, IR-Net/Bi-Real style): a real shortcut around every
    binary conv, ``h = BN(BinConv(x)) + shortcut(x)``, then ``BN(BinConv(h)) + h``.
    ``block="classic"``: ``BN(BinConv(BN(BinConv(x)))) + shortcut(x)`` (the peers' model).
    ``shortcut="A"``: parameter-free stride-2 subsample + zero channel padding (D11);
    ``"B"``: real 1x1 conv (stride 2) + BN where the shape changes. The 18 binary 3x3 convs
    binarize inputs and weights; the stem and the head stay real. IR-Net's hardtanh after each
    add is left out: the next layer takes sign() of its input anyway.
    """

    num_classes: int = 10
    block: str = "birealish"
    shortcut: str = "A"
    width: int = 16
    binary: BinaryOptions = BinaryOptions()
    dtype: Any = None

    def _shortcut(self, x: jax.Array, features: int, stride: int, train: bool) -> jax.Array:
        if stride == 1 and x.shape[-1] == features:
            return x
        if self.shortcut == "A":
            x = x[:, ::stride, ::stride, :]
            pad = features - x.shape[-1]
            return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
        x = nn.Conv(features, (1, 1), (stride, stride), use_bias=False, dtype=self.dtype)(x)
        return batch_norm(train, self.dtype)(x)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.block not in BLOCKS or self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"ResNet20: block must be one of {BLOCKS} and shortcut one of {SHORTCUTS}, "
                f"got block={self.block!r}, shortcut={self.shortcut!r}"
            )
        b, dt = self.binary, self.dtype
        stem = nn.Conv(
            self.width,
            (3, 3),
            padding="SAME",
            use_bias=False,
            dtype=dt,
            name="stem",
            conv_general_dilated=b.stem_conv,
        )
        x = stem(x)
        x = batch_norm(train, dt)(x)
        for stage, features in enumerate((self.width, 2 * self.width, 4 * self.width)):
            for block in range(3):
                stride = 2 if stage > 0 and block == 0 else 1
                shortcut = self._shortcut(x, features, stride, train)
                conv1 = b.conv(features, strides=(stride, stride), dtype=dt)
                if self.block == "birealish":
                    h = batch_norm(train, dt)(conv1(x)) + shortcut
                    x = batch_norm(train, dt)(b.conv(features, dtype=dt)(h)) + h
                else:  # the inner BN feeds only the second conv's sign: foldable when deployed
                    h = norm_to_sign(b, conv1, x, train, dt)
                    x = batch_norm(train, dt)(b.conv(features, dtype=dt)(h)) + shortcut
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=dt, name="head")(x).astype(jnp.float32)
