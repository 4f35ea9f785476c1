"""Weight scale factors of the baselines (method.md D8, §6.2, §6.4).

The binary weight of a layer is ``scale * sign(.)`` where ``scale`` is a stop-gradient
``mean|W|``: one scalar per layer (DoReFa, CIFAR and AlexNet setups) or one per output
channel (Bi-Real Net). Kernels are in Flax layout, so the output channel is the last axis:
``(kh, kw, c_in, c_out)`` for convolutions, ``(c_in, c_out)`` for dense layers.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

__all__ = ["SCALE_MODES", "weight_scale"]

ScaleMode = Literal["none", "layer", "channel"]
SCALE_MODES: tuple[str, ...] = ("none", "layer", "channel")


def weight_scale(kernel: jax.Array, mode: ScaleMode = "layer") -> jax.Array:
    """Stop-gradient ``mean|W|`` scale of a kernel in Flax layout (D8).

    Args:
      kernel: latent weights, output channels on the last axis.
      mode: ``"layer"``: one scalar ``mean|W|`` over the whole kernel (DoReFa, §6.2);
        ``"channel"``: ``mean|W|`` over all axes but the last, shape ``(1, ..., 1, c_out)``
        (Bi-Real, §6.4); ``"none"``: the scalar ``1``.

    Returns:
      An array that broadcasts against ``kernel``, with no gradient flowing through it.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> w = jnp.array([[1.0, -4.0], [-3.0, 2.0]])  # (c_in=2, c_out=2)
        >>> float(bnnns.weight_scale(w, "layer"))
        2.5
        >>> bnnns.weight_scale(w, "channel").tolist()
        [[2.0, 3.0]]
    """
    if mode == "none":
        return jnp.ones((), kernel.dtype)
    if mode == "layer":
        scale = jnp.mean(jnp.abs(kernel))
    elif mode == "channel":
        scale = jnp.mean(jnp.abs(kernel), axis=tuple(range(kernel.ndim - 1)), keepdims=True)
    else:
        raise ValueError(f"weight_scale: mode must be one of {SCALE_MODES}, got {mode!r}")
    return jax.lax.stop_gradient(scale)
