"""Bop, the latent-free optimizer of binary weights (Helwegen et al., NeurIPS 2019), as optax.

Bop keeps no latent weight to step: it keeps an exponential moving average of the gradient,
``m_t = (1 - gamma) m_{t-1} + gamma g_t`` (their Eq. 6, ``gamma`` the adaptivity rate), and
flips a binary weight when that average is large and agrees with it (their Algorithm 1):

    w_t = -w_{t-1}   if |m_t| > tau and sign(m_t) == sign(w_{t-1}),   else w_{t-1}.

:func:`bop` applies to the binary kernels only; the real parameters (stem, head, BatchNorm)
need another optimizer. :func:`with_bop` routes the two with ``optax.multi_transform`` by a
regular expression over the ``"a/b/kernel"`` paths and raises, naming the pattern, when it
matches no parameter (Larq's silent footgun, larq#443). :func:`binary_kernel_pattern` builds
the pattern that matches exactly the kernels of a model's binary layers.

A flip is ``w -> -w``: for ``±1`` weights that is the paper's update; a bnnns layer with
``weight_binarizer="sign"`` computes with ``sign(W)`` and a stop-gradient scale ``mean|W|``
(D8), so flipping the stored kernel flips the binary weight and leaves the scale as it is.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bnnns.core.estimators import sign

__all__ = ["BopState", "bop", "bop_labels", "with_bop", "binary_kernel_pattern"]

SEP = "/"


class BopState(NamedTuple):
    """The moving average ``m`` of the gradient, one leaf per binary weight."""

    m: Any


def bop(threshold: float = 1e-8, gamma: float = 1e-4) -> optax.GradientTransformation:
    """Bop's flips as an optax transformation: the update is ``-2 w`` where a weight flips.

    Args:
      threshold: ``tau > 0`` of Algorithm 1 (Larq's default ``1e-8``).
      gamma: adaptivity rate ``0 < gamma <= 1`` of the moving average (default ``1e-4``).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> tx = bop(threshold=0.1, gamma=1.0)
        >>> w = jnp.array([1.0, -1.0, 1.0, -1.0])
        >>> g = jnp.array([0.5, 0.5, 0.05, -0.5])  # flip: same sign as w and |m| > tau
        >>> u, _ = tx.update(g, tx.init(w), w)
        >>> optax.apply_updates(w, u).tolist()
        [-1.0, -1.0, 1.0, 1.0]
    """
    threshold, gamma = float(threshold), float(gamma)
    if not threshold > 0:
        raise ValueError(f"bop: threshold (tau) must be > 0, got {threshold!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"bop: gamma must be in (0, 1], got {gamma!r}")

    def init(params: Any) -> BopState:
        return BopState(m=jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params))

    def update(grads: Any, state: BopState, params: Any = None) -> tuple[Any, BopState]:
        if params is None:
            raise ValueError("bop: update needs params (the binary weights it flips)")
        m = jax.tree.map(lambda m, g: (1 - gamma) * m + gamma * g.astype(m.dtype), state.m, grads)

        def flip(w: jax.Array, m: jax.Array) -> jax.Array:
            # |m| > tau and sign(m) == sign(w), with sign(0) = +1 (D10): m * sign(w) > tau
            flips = m * sign(w).astype(m.dtype) > threshold
            return jnp.where(flips, -2 * w, jnp.zeros_like(w))

        return jax.tree.map(flip, params, m), BopState(m=m)

    return optax.GradientTransformation(init, update)


def _paths(params: Any) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [SEP.join(str(getattr(k, "key", k)) for k in path) for path, _ in flat]


def bop_labels(params: Any, pattern: str) -> Any:
    """``"bop"`` for each leaf whose ``"a/b/kernel"`` path matches ``pattern`` (``re.search``),
    ``"other"`` for the rest.

    Raises:
        ValueError: ``pattern`` matches no parameter (naming it and some parameter paths).

    Example:
        >>> import jax.numpy as jnp
        >>> p = {"conv1": {"kernel": jnp.ones(2)}, "head": {"bias": jnp.ones(1)}}
        >>> bop_labels(p, r"^conv1/kernel$")
        {'conv1': {'kernel': 'bop'}, 'head': {'bias': 'other'}}
    """
    regex = re.compile(pattern)
    names = _paths(params)
    labels = ["bop" if regex.search(name) else "other" for name in names]
    if "bop" not in labels:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(
            f"bop: the pattern {pattern!r} matches no parameter, so Bop would train nothing; "
            f"the parameters are: {shown}"
        )
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), labels)


def with_bop(
    other: optax.GradientTransformation,
    pattern: str,
    threshold: float = 1e-8,
    gamma: float = 1e-4,
) -> optax.GradientTransformation:
    """Bop on the parameters whose path matches ``pattern``, ``other`` on the rest
    (``optax.multi_transform``); ``init`` raises when ``pattern`` matches nothing.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> p = {"conv1": {"kernel": jnp.ones(2)}, "head": {"bias": jnp.ones(1)}}
        >>> tx = with_bop(optax.sgd(0.1), r"^conv2/kernel$")
        >>> tx.init(p)
        Traceback (most recent call last):
        ...
        ValueError: bop: the pattern '^conv2/kernel$' matches no parameter, ...
    """
    return optax.multi_transform(
        {"bop": bop(threshold, gamma), "other": other},
        lambda params: bop_labels(params, pattern),
    )


def binary_kernel_pattern(model: nn.Module, dummy_input: jax.Array, **kwargs: Any) -> str:
    """The regular expression that matches exactly the kernels of ``model``'s binary layers
    (those that sow binary weights, :mod:`bnnns.nn.layers`), as ``"^(a/kernel|b/kernel)$"``.

    ``kwargs`` go to ``model.init`` (e.g. ``train=False``); nothing is computed (``eval_shape``).
    """
    init = functools.partial(model.init, **kwargs)  # kwargs stay static (train=False)
    variables = jax.eval_shape(init, jax.random.key(0), dummy_input)
    sown = _paths(variables.get("binary_weights", {}))
    if not sown:
        raise ValueError(f"bop: {type(model).__name__} has no binary layer for Bop to train")
    layers = sorted({SEP.join(p.split(SEP)[:-2]) for p in sown})
    kernels = [re.escape(f"{layer}{SEP}kernel" if layer else "kernel") for layer in layers]
    return "^(" + "|".join(kernels) + ")$"
