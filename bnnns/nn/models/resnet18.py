"""ResNet-18 with DoReFa binarization for ImageNet (method.md §4, §5.2 Tables 3-4, §6.2)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.nn.models.common import BinaryOptions, batch_norm, imagenet_stem, norm_to_sign

__all__ = ["ResNet18"]


class ResNet18(nn.Module):
    """The standard ResNet-18 (He et al. 2016), 16 binary 3x3 convs, DoReFa binarization.

    Stem (real): conv 7x7/2 (64) -> BN -> maxpool 3x3/2 (no ReLU: the next layer takes the
    sign of its input, as in Bi-Real, §6.4). Four stages of two basic blocks (64/128/256/512
    channels, stride 2 in the first block of stages 2-4):
    ``BN(BinConv3x3(BN(BinConv3x3_s(x)))) + shortcut(x)``; the shortcut is the identity or,
    where the shape changes, a **real** 1x1 conv (stride s) + BN: the paper binarizes neither
    the first conv, the last FC nor the downsample convs (§4, "Layers binarized"; Table 3).
    Head (real): global avgpool -> Dense. DoReFa weights: one stop-gradient ``mean|W|`` per
    layer with the identity STE; activations ``sign`` with the clipped STE (§6.2, D8, D9), as
    ``configs/imagenet_resnet18_dorefa_*`` set. Deployed, the BN between the two binary convs
    of a block (followed only by the second conv's sign) folds into an integer threshold.
    """

    num_classes: int = 1000
    width: int = 64
    binary: BinaryOptions = BinaryOptions()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, dt, w = self.binary, self.dtype, self.width
        x = imagenet_stem(x, w, train, dt)
        pad = ((1, 1), (1, 1))
        for stage, features in enumerate((w, 2 * w, 4 * w, 8 * w)):
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                shortcut = x
                if stride != 1 or x.shape[-1] != features:
                    shortcut = nn.Conv(
                        features, (1, 1), (stride, stride), use_bias=False, dtype=dt
                    )(x)
                    shortcut = batch_norm(train, dt)(shortcut)
                conv1 = b.conv(features, strides=(stride, stride), padding=pad, dtype=dt)
                h = norm_to_sign(b, conv1, x, train, dt)
                h = batch_norm(train, dt)(b.conv(features, padding=pad, dtype=dt)(h))
                x = h + shortcut
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=dt, name="head")(x).astype(jnp.float32)
