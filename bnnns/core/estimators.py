"""Sign estimators: forward ``sign``, surrogate (straight-through) gradients.

``ste_sign`` and ``approx_sign`` are ``jax.custom_vjp`` functions whose forward value is
exactly ``+1`` or ``-1`` in the dtype of the input, with ``sign(0) = +1`` (method.md D10,
Q16). They differ only in the gradient they pass back (method.md §6.1).

Numeric conventions
===================

| estimator             | at 0 | backward (``g`` = upstream gradient) | used for               |
|-----------------------|------|--------------------------------------|------------------------|
| ``sign``              | +1   | none (zero gradient)                 | labels Q~ (Eq. 1)      |
| ``ste_sign(clip=c)``  | +1   | ``g * 1{|x| <= c}`` (clipped STE)    | acts (D9), q^ (D2)     |
| ``ste_sign(None)``    | +1   | ``g`` (identity STE, DoReFa)         | sign(W) weights        |
| ``approx_sign``       | +1   | ``g * max(0, 2 - 2|x|)`` (Bi-Real)   | Bi-Real activations    |
| ``clip_grad_sign(c)`` | +1   | ``clip(g, -c, c)`` (no mask)         | Eq. 3 as printed (D2)  |

All forward values are ``sign(x)``, exactly ``±1`` in the dtype of ``x``.

Scale (D8, :func:`bnnns.weight_scale`): ``"layer"`` = one stop-gradient ``mean|W|`` per layer
(DoReFa/CIFAR), ``"channel"`` = one per output channel (Bi-Real), ``"none"`` = 1.

The clip boundary is inclusive: at ``|x| == clip`` the gradient passes. ApproxSign's
surrogate ``F(x)`` is ``2x + x^2`` on ``[-1, 0)`` and ``2x - x^2`` on ``[0, 1)``, so its
derivative at 0 is 2 and at ``|x| = 1`` is 0. Weight scales (D8) live in
:mod:`bnnns.core.scaling`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["DEFAULT_WEIGHT_STE", "sign", "ste_sign", "approx_sign", "clip_grad_sign"]

#: The weight STE of each weight binarizer when a layer or config names none: the one place the
#: layers (:class:`bnnns.BinaryConv`, ``weight_ste=None``) and the trainer's default config read.
#: ``"lns"``: D2's clipped STE on ``q^`` (Eq. 3, ``1{|q^| <= clip}``); ``"sign"``: the identity
#: STE on ``W`` (DoReFa; pretrain and fine-tuning, ``config.binary.weight_ste``).
DEFAULT_WEIGHT_STE = {"lns": "clipped", "sign": "identity"}


def sign(x: jax.Array) -> jax.Array:
    """``sign`` with ``sign(0) = +1`` (D10); values exactly ``±1`` in the dtype of ``x``.

    This is the label map of Eq. 1 (``Q~ = sign(W)``). Its gradient is zero everywhere; use
    :func:`ste_sign` or :func:`approx_sign` where a surrogate gradient is wanted.

    Example:
        >>> import jax.numpy as jnp, bnnns
        >>> bnnns.sign(jnp.array([-0.5, 0.0, 2.0])).tolist()
        [-1.0, 1.0, 1.0]
    """
    x = jnp.asarray(x)
    one = jnp.ones((), x.dtype)
    return jnp.where(x >= 0, one, -one)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _ste_sign(x: jax.Array, clip: float | None) -> jax.Array:
    return sign(x)


def _ste_sign_fwd(x, clip):
    return sign(x), x


def _ste_sign_bwd(clip, x, g):
    if clip is None:
        return (g,)
    return (jnp.where(jnp.abs(x) <= clip, g, jnp.zeros_like(g)),)


_ste_sign.defvjp(_ste_sign_fwd, _ste_sign_bwd)


def ste_sign(x: jax.Array, clip: float | None = 1.0) -> jax.Array:
    """Sign with a straight-through gradient (Eq. 3; method.md §6.1).

    Forward: ``sign(x)`` with ``sign(0) = +1``, values exactly ``±1``, dtype kept.
    Backward: ``g * 1{|x| <= clip}`` (clipped STE, BinaryNet / Larq ``ste_sign``), or ``g``
    unchanged when ``clip is None`` (identity STE, DoReFa weights).

    Args:
      x: input array (any shape, floating dtype).
      clip: positive clip range of the gradient window, or ``None`` for the identity STE.

    Returns:
      ``sign(x)`` in the dtype of ``x``.

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> x = jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0])
        >>> bnnns.ste_sign(x).tolist()
        [-1.0, -1.0, 1.0, 1.0, 1.0]
        >>> jax.grad(lambda x: bnnns.ste_sign(x).sum())(x).tolist()
        [0.0, 1.0, 1.0, 1.0, 0.0]
    """
    if clip is not None:
        clip = float(clip)
        if not clip > 0:
            raise ValueError(f"ste_sign: clip must be a positive number or None, got {clip!r}")
    return _ste_sign(jnp.asarray(x), clip)


@jax.custom_vjp
def approx_sign(x: jax.Array) -> jax.Array:
    """Bi-Real Net's ApproxSign (method.md §6.1, D9).

    Forward: ``sign(x)`` with ``sign(0) = +1``. Backward: ``g * max(0, 2 - 2|x|)``, the
    derivative of the piecewise-quadratic surrogate ``F`` of Liu et al. (2018).

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> x = jnp.array([-1.5, -0.5, 0.0, 0.25, 1.0])
        >>> bnnns.approx_sign(x).tolist()
        [-1.0, -1.0, 1.0, 1.0, 1.0]
        >>> jax.grad(lambda x: bnnns.approx_sign(x).sum())(x).tolist()
        [0.0, 1.0, 2.0, 1.5, 0.0]
    """
    return sign(x)


def _approx_sign_fwd(x):
    return sign(x), x


def _approx_sign_bwd(x, g):
    two = jnp.asarray(2.0, x.dtype)
    surrogate = jnp.maximum(jnp.zeros_like(x), two - two * jnp.abs(x))
    return (g * surrogate.astype(g.dtype),)


approx_sign.defvjp(_approx_sign_fwd, _approx_sign_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _clip_grad_sign(x: jax.Array, clip: float) -> jax.Array:
    return sign(x)


def _clip_grad_sign_fwd(x, clip):
    return sign(x), None


def _clip_grad_sign_bwd(clip, _, g):
    return (jnp.clip(g, -clip, clip),)


_clip_grad_sign.defvjp(_clip_grad_sign_fwd, _clip_grad_sign_bwd)


def clip_grad_sign(x: jax.Array, clip: float = 1.0) -> jax.Array:
    """Sign whose backward clips the gradient *value*: ``clip(g, -clip, clip)``, no mask on x.

    Eq. 3 read literally (``dl/dW ~ clip(dl/dQ~, -1, 1)``, method.md §7, Q6): unlike
    :func:`ste_sign`, the gradient passes wherever ``x`` is, only its size is bounded. One of
    the D2 readings (``lns.weight_ste = "clip_grad"``), an ablation, not the default.

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> x = jnp.array([-3.0, 0.0, 2.0])
        >>> jax.grad(lambda x: (bnnns.core.estimators.clip_grad_sign(x) * 4.0).sum())(x).tolist()
        [1.0, 1.0, 1.0]
    """
    clip = float(clip)
    if not clip > 0:
        raise ValueError(f"clip_grad_sign: clip must be a positive number, got {clip!r}")
    return _clip_grad_sign(jnp.asarray(x), clip)
