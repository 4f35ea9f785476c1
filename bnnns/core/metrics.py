"""Metrics of binary weights and classifiers, as plain functions of arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bnnns.core.estimators import sign

__all__ = ["flip_rate", "sign_agreement", "accuracy"]


def flip_rate(a: jax.Array, b: jax.Array) -> jax.Array:
    """Fraction of entries whose signs differ, with ``sign(0) = +1`` (Fig. 3c; D12).

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> a, b = jnp.array([1.0, -2.0, 0.0, 3.0]), jnp.array([2.0, 1.0, -1.0, 0.0])
        >>> float(bnnns.flip_rate(a, b))
        0.5
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"flip_rate: shapes differ, {a.shape} vs {b.shape}")
    return jnp.mean((sign(a) != sign(b)).astype(jnp.float32))


def sign_agreement(a: jax.Array, b: jax.Array) -> jax.Array:
    """Fraction of entries with equal signs, ``1 - flip_rate`` (label agreement of D7, D12).

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> float(bnnns.core.metrics.sign_agreement(jnp.array([1.0, -1.0]), jnp.array([0.5, 0.5])))
        0.5
    """
    return 1.0 - flip_rate(a, b)


def accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Top-1 accuracy of ``logits`` against integer ``labels`` over the (masked) batch.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> float(bnnns.core.metrics.accuracy(jnp.eye(3), jnp.array([0, 1, 0])))
        0.6666666865348816
    """
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
        return jnp.mean(correct)
    return jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0)
