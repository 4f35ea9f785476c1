"""DoReFa AlexNet for ImageNet (method.md §5.3 Table 5, §6.2, Q10)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnns.nn.models.common import BinaryOptions, batch_norm, norm_to_sign

__all__ = ["AlexNet"]


class AlexNet(nn.Module):
    """The DoReFa-Net AlexNet layout (tensorpack ``alexnet-dorefa.py``, method.md §6.2).

    ``conv0`` 96@12x12/4 VALID with bias (real) -> ``conv1`` 256@5x5, 2 groups -> BN ->
    maxpool 3/2 -> ``conv2`` 384@3x3 -> BN -> maxpool 3/2 -> ``conv3`` 384@3x3, 2 groups -> BN
    -> ``conv4`` 256@3x3, 2 groups -> BN -> maxpool 3/2 VALID -> flatten -> ``fc0`` 4096 -> BN
    -> ``fc1`` 4096 -> BN -> ``fct`` (real, with bias). ``conv1``-``conv4``, ``fc0`` and
    ``fc1`` are binary (the 180 Mbit of Table 5 implies binary FC layers, §5.3); their inputs
    are ``sign`` of the previous output (the paper's ``B = sign(X)``, Q9, instead of DoReFa's
    {0, 1} activations). Channel counts scale with ``width / 64`` (64: the paper's model).

    **FC layers use plain sign, also in the LNS stage** (method.md Q10): a mapping network for
    a dense layer is a 2c-wide CNN over ``c = 9216`` or ``4096`` inputs, 72 c^2 = 6.1e9 / 1.2e9
    weights, infeasible; so ``fc0``/``fc1`` keep ``Q = sign(W)`` (DoReFa) and only the four
    binary convs get LNS mapping networks (5x5 and 3x3 kernels work as they are, §2).
    Deployed, every BN after a binary layer except ``fc1``'s feeds only the next sign and
    folds into an integer threshold.
    """

    num_classes: int = 1000
    width: int = 64
    binary: BinaryOptions = BinaryOptions()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, dt = self.binary, self.dtype
        c = lambda n: max(2, n * self.width // 64)  # noqa: E731
        x = nn.Conv(c(96), (12, 12), (4, 4), padding="VALID", dtype=dt, name="conv0")(x)
        pool = lambda h, padding="SAME": nn.max_pool(h, (3, 3), (2, 2), padding=padding)  # noqa: E731
        conv1 = b.conv(c(256), kernel_size=(5, 5), feature_group_count=2, dtype=dt, name="conv1")
        x = pool(norm_to_sign(b, conv1, x, train, dt))
        x = pool(norm_to_sign(b, b.conv(c(384), dtype=dt, name="conv2"), x, train, dt))
        conv3 = b.conv(c(384), feature_group_count=2, dtype=dt, name="conv3")
        x = norm_to_sign(b, conv3, x, train, dt)
        conv4 = b.conv(c(256), feature_group_count=2, dtype=dt, name="conv4")
        x = pool(norm_to_sign(b, conv4, x, train, dt), "VALID")
        x = x.reshape((x.shape[0], -1))
        fc = b.without_mapping()  # Q10: plain sign for the binary FC layers
        x = norm_to_sign(fc, fc.dense(c(4096), dtype=dt, name="fc0"), x, train, dt)
        x = batch_norm(train, dt)(fc.dense(c(4096), dtype=dt, name="fc1")(x))
        return nn.Dense(self.num_classes, dtype=dt, name="fct")(x).astype(jnp.float32)
