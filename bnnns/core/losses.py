"""The loss-corrected (unbiased) estimator of LNS and the classification loss.

Notation of the paper (method.md §1.4-1.5): ``q^`` is the mapping network's real output
(Eq. 4), ``q~ = sign(w)`` the noisy label (Eq. 1), ``rho_pos = rho_{+1} = P(q~ = -1 | q = +1)``
(Eq. 8) and ``rho_neg = rho_{-1} = P(q~ = +1 | q = -1)`` (Eq. 9), with ``rho_pos + rho_neg < 1``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

__all__ = [
    "squared_loss",
    "unbiased_loss",
    "lns_loss",
    "lns_target",
    "lns_loss_floor",
    "check_noise_rates",
    "cross_entropy",
]

ArrayOrFloat = jax.Array | float


def squared_loss(pred: jax.Array, label: jax.Array) -> jax.Array:
    """Elementwise squared loss ``(q^ - q)^2`` of Eqs. 5-7.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> bnnns.core.losses.squared_loss(jnp.array([0.5, -2.0]), jnp.array([1.0, -1.0])).tolist()
        [0.25, 1.0]
    """
    return jnp.square(pred - label)


def check_noise_rates(rho_pos: ArrayOrFloat, rho_neg: ArrayOrFloat) -> None:
    """Raise ``ValueError`` if Python-number noise rates break Eqs. 8-9's constraints.

    Allowed: ``rho_pos >= 0``, ``rho_neg >= 0`` and ``rho_pos + rho_neg < 1``. Traced or array
    values are not checked (they cannot be inspected under ``jit``).

    Example:
        >>> from bnnns.core.losses import check_noise_rates
        >>> check_noise_rates(0.005, 0.005)  # fine
        >>> check_noise_rates(0.6, 0.5)
        Traceback (most recent call last):
        ValueError: rho_pos + rho_neg must be < 1 (Eqs. 8-9), got rho_pos=0.6, rho_neg=0.5 (sum 1.1)
    """
    values = {"rho_pos": rho_pos, "rho_neg": rho_neg}
    numbers_only = {k: v for k, v in values.items() if isinstance(v, numbers.Real)}
    for name, value in numbers_only.items():
        if not value >= 0:  # also catches NaN
            raise ValueError(f"{name} must be >= 0 (a flip probability), got {name}={value!r}")
    if len(numbers_only) == 2 and not rho_pos + rho_neg < 1:
        raise ValueError(
            "rho_pos + rho_neg must be < 1 (Eqs. 8-9), got "
            f"rho_pos={rho_pos!r}, rho_neg={rho_neg!r} (sum {rho_pos + rho_neg!r})"
        )


def unbiased_loss(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    pred: jax.Array,
    noisy_label: jax.Array,
    rho_pos: ArrayOrFloat,
    rho_neg: ArrayOrFloat,
) -> jax.Array:
    """Elementwise loss-corrected estimator ``l~(q^, q~)`` of Eq. 15 (Natarajan et al. 2013).

    ``l~(q^, q~) = [(1 - rho_{-q~}) l(q^, q~) - rho_{q~} l(q^, -q~)] / (1 - rho_pos - rho_neg)``,
    which satisfies Eq. 10: ``E_{q~}[l~(q^, q~)] = l(q^, q)`` for both clean labels (Eqs. 11-14).

    Args:
      loss_fn: elementwise loss ``l(pred, label)``, e.g. :func:`squared_loss`.
      pred: predictions ``q^``.
      noisy_label: labels ``q~`` in ``{-1, +1}`` (broadcastable against ``pred``).
      rho_pos: ``P(q~ = -1 | q = +1)`` (Eq. 8).
      rho_neg: ``P(q~ = +1 | q = -1)`` (Eq. 9).

    Returns:
      The elementwise corrected loss, shape of ``loss_fn(pred, noisy_label)``.

    Raises:
      ValueError: for a Python-number rho that is negative or with ``rho_pos + rho_neg >= 1``.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> l = bnnns.unbiased_loss(bnnns.core.losses.squared_loss, jnp.array([1.0]),
        ...                         jnp.array([1.0]), 0.1, 0.1)
        >>> round(float(l[0]), 4)  # (0.9 * 0 - 0.1 * 4) / 0.8
        -0.5
    """
    check_noise_rates(rho_pos, rho_neg)
    positive = noisy_label > 0
    rho_same = jnp.where(positive, rho_pos, rho_neg)  # rho_{q~}
    rho_opp = jnp.where(positive, rho_neg, rho_pos)  # rho_{-q~}
    same = loss_fn(pred, noisy_label)
    flipped = loss_fn(pred, -noisy_label)
    dtype = jnp.result_type(same)
    corrected = (1 - rho_opp) * same - rho_same * flipped
    return (corrected / (1 - rho_pos - rho_neg)).astype(dtype)


def lns_loss(
    q_hat: jax.Array,
    q_tilde: jax.Array,
    rho_pos: ArrayOrFloat,
    rho_neg: ArrayOrFloat,
    reduction: Literal["sum", "mean", "none"] = "mean",
) -> jax.Array:
    """Auxiliary LNS loss of one layer: Eq. 15 with the squared loss of Eq. 7, reduced (D3).

    The reduction is the mean over the layer's elements by default, the sample average of
    Eq. 16 (method.md D3, changed from the sum after SGD at lr 0.01 diverged on it); ``"sum"``
    gives Eq. 17 literally and ``"none"`` the elementwise values. The gradient with respect to
    ``q^`` is Eq. 18 per element for the sum,
    ``2 (q^ - q~) - 4 rho_{q~} q~ / (1 - rho_pos - rho_neg)``, and that divided by the element
    count for the mean.

    Args:
      q_hat: real-valued mapping output ``q^ = f_theta(W)`` (Eq. 4).
      q_tilde: noisy labels ``sign(W)`` in ``{-1, +1}``; treat as constant (stop-gradient).
      rho_pos: ``P(q~ = -1 | q = +1)`` (Eq. 8).
      rho_neg: ``P(q~ = +1 | q = -1)`` (Eq. 9).
      reduction: ``"mean"`` (Eq. 16, D3 default), ``"sum"`` (Eq. 17) or ``"none"``.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> q_hat, q_tilde = jnp.array([0.9, -1.2]), jnp.array([1.0, -1.0])
        >>> round(float(bnnns.lns_loss(q_hat, q_tilde, 0.0, 0.0)), 4)  # rho = 0: Eq. 7, mean
        0.025
    """
    elementwise = unbiased_loss(squared_loss, q_hat, q_tilde, rho_pos, rho_neg)
    if reduction == "sum":
        return jnp.sum(elementwise)
    if reduction == "mean":
        return jnp.mean(elementwise)
    if reduction == "none":
        return elementwise
    raise ValueError(f"lns_loss: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


def lns_target(q_tilde: jax.Array, rho_pos: ArrayOrFloat, rho_neg: ArrayOrFloat) -> jax.Array:
    """The minimiser of Eq. 15's squared loss in ``q^``: ``c q~`` with
    ``c = 1 + 2 rho_{q~} / (1 - rho_pos - rho_neg)``, where Eq. 18 vanishes (method.md §1.5,
    DERIVED (b)); ``1 / (1 - 2 rho)`` for symmetric noise.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> bnnns.core.losses.lns_target(jnp.array([1.0, -1.0]), 0.1, 0.1).tolist()
        [1.25, -1.25]
    """
    rho_same = jnp.where(q_tilde > 0, rho_pos, rho_neg)
    return q_tilde * (1 + 2 * rho_same / (1 - rho_pos - rho_neg))


def lns_loss_floor(
    q_tilde: jax.Array,
    rho_pos: ArrayOrFloat,
    rho_neg: ArrayOrFloat,
    reduction: Literal["sum", "mean", "none"] = "mean",
) -> jax.Array:
    """The smallest value :func:`lns_loss` can take for labels ``q~`` (at ``q^ = lns_target``).

    It is ``1 - c^2 <= 0`` per element, so ``lns_loss - lns_loss_floor`` is the excess loss
    ``(q^ - c q~)^2`` (reduced alike), which the D7 warm start's convergence test uses.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> round(float(bnnns.core.losses.lns_loss_floor(jnp.ones(4), 0.01, 0.01)), 4)
        -0.0412
    """
    return lns_loss(lns_target(q_tilde, rho_pos, rho_neg), q_tilde, rho_pos, rho_neg, reduction)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy ``l_cls`` of Eq. 21 over the (masked) batch.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> round(float(bnnns.core.losses.cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))), 4)
        1.3863
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if mask is None:
        return jnp.mean(nll)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
