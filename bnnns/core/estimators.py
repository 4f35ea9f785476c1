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
| ``swish_sign(b)``     | +1   | ``g * b(2 - bx tanh(bx/2))/(1+cosh(bx))`` | Larq SwishSign |
| ``ede_sign(x, t, k)`` | +1   | ``g * k t (1 - tanh^2(t x))``        | IR-Net EDE             |
| ``rsign(x, a)``       | +1 at a | approx_sign's at ``x - a``; ``a``: minus it | ReActNet |

All forward values are ``sign(x)`` (``sign(x - a)`` for ``rsign``), exactly ``±1`` in the
dtype of ``x``.

SwishSign (Darabi et al. 2018, Larq's ``SwishSign``, default ``beta = 5``): the gradient is the
derivative of ``2 sigmoid(bx) (1 + bx (1 - sigmoid(bx))) - 1``: ``beta`` at 0, negative for
``|x| > 2.4 / beta`` (then decaying to 0). EDE (IR-Net, Qin et al. CVPR 2020): the
derivative of ``k tanh(t x)``, with ``t`` and ``k`` moved over training by
:func:`ede_schedule` (``t = T_min 10^(i/N log10(T_max/T_min))``, ``k = max(1/t, 1)``,
``T_min = 0.1``, ``T_max = 10``): from an identity-like STE to the sign. RSign (ReActNet, Liu
et al. ECCV 2020): ``sign(x - alpha)`` with a learnable per-channel threshold ``alpha`` (the last
axis), through ``approx_sign``'s surrogate. The layers (:mod:`bnnns.nn.layers`) and the config
select them by name: ``activation="swish_sign"`` (``swish_beta``), ``"ede_sign"``, ``"rsign"``;
``weight_ste="ede"``; EDE's ``progress`` is the stage's ``step / total_steps``.

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

__all__ = [
    "DEFAULT_WEIGHT_STE",
    "sign",
    "ste_sign",
    "approx_sign",
    "clip_grad_sign",
    "swish_sign",
    "ede_sign",
    "ede_schedule",
    "rsign",
]

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


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _swish_sign(x: jax.Array, beta: float) -> jax.Array:
    return sign(x)


def _swish_sign_fwd(x, beta):
    return sign(x), x


def _swish_sign_bwd(beta, x, g):
    bx = beta * x.astype(jnp.float32)
    grad = beta * (2 - bx * jnp.tanh(bx / 2)) / (1 + jnp.cosh(bx))
    return ((g * grad.astype(g.dtype)),)


_swish_sign.defvjp(_swish_sign_fwd, _swish_sign_bwd)


def swish_sign(x: jax.Array, beta: float = 5.0) -> jax.Array:
    """Larq's SwishSign (Darabi et al. 2018): ``sign(x)`` forward; backward
    ``g * beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))``.

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> x = jnp.array([-1.0, 0.0, 0.5])
        >>> bnnns.estimators.swish_sign(x).tolist()
        [-1.0, 1.0, 1.0]
        >>> g = jax.grad(lambda x: bnnns.estimators.swish_sign(x).sum())(x)
        >>> [round(float(v), 4) for v in g]
        [-0.195, 5.0, -0.0846]
    """
    beta = float(beta)
    if not beta > 0:
        raise ValueError(f"swish_sign: beta must be > 0, got {beta!r}")
    return _swish_sign(jnp.asarray(x), beta)


@jax.custom_vjp
def ede_sign(x: jax.Array, t: jax.Array, k: jax.Array) -> jax.Array:
    """IR-Net's Error Decay Estimator (Qin et al. 2020): ``sign(x)`` forward; backward
    ``g * k t (1 - tanh^2(t x))``, the derivative of ``k tanh(t x)``; ``t``, ``k`` from
    :func:`ede_schedule` (they get no gradient).

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> x = jnp.array([-0.5, 0.0, 2.0])
        >>> t, k = bnnns.estimators.ede_schedule(1.0)  # the end of training: t = 10, k = 1
        >>> g = jax.grad(lambda x: bnnns.estimators.ede_sign(x, t, k).sum())(x)
        >>> [round(float(v), 4) for v in g]
        [0.0018, 10.0, 0.0]
    """
    return sign(x)


def _ede_fwd(x, t, k):
    return sign(x), (x, t, k)


def _ede_bwd(res, g):
    x, t, k = res
    sech = 1 / jnp.cosh(t * x.astype(jnp.float32))  # 1 - tanh^2 without the cancellation
    grad = (k * t * sech * sech).astype(g.dtype)
    return g * grad, jnp.zeros_like(t), jnp.zeros_like(k)


ede_sign.defvjp(_ede_fwd, _ede_bwd)


def ede_schedule(
    progress: jax.Array | float, t_min: float = 0.1, t_max: float = 10.0
) -> tuple[jax.Array, jax.Array]:
    """IR-Net's ``(t, k)`` at ``progress = i / N`` of training (epoch ``i`` of ``N``):
    ``t = t_min 10^(progress log10(t_max / t_min))``, ``k = max(1 / t, 1)``.

    Example:
        >>> import bnnns
        >>> schedule = bnnns.estimators.ede_schedule
        >>> [tuple(round(float(v), 3) for v in schedule(p)) for p in (0, 0.5, 1)]
        [(0.1, 10.0), (1.0, 1.0), (10.0, 1.0)]
    """
    p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    t = t_min * 10.0 ** (p * jnp.log10(t_max / t_min))
    return t, jnp.maximum(1.0 / t, 1.0)


def rsign(x: jax.Array, threshold: jax.Array) -> jax.Array:
    """ReActNet's RSign (Liu et al. 2020): ``sign(x - threshold)`` (``+1`` at
    ``x = threshold``, D10) with a learnable ``threshold`` that broadcasts against ``x`` (one per
    channel: shape ``(C,)``), through :func:`approx_sign`: ``d/dx = max(0, 2 - 2|x - a|)`` and
    ``d/da = -`` that, summed over the broadcast axes.

    Example:
        >>> import jax, jax.numpy as jnp, bnnns
        >>> x, a = jnp.array([[0.0, 0.5]]), jnp.array([0.25, 0.25])
        >>> bnnns.estimators.rsign(x, a).tolist()
        [[-1.0, 1.0]]
        >>> jax.grad(lambda a: bnnns.estimators.rsign(x, a).sum())(a).tolist()
        [-1.5, -1.5]
    """
    x = jnp.asarray(x)
    return approx_sign(x - jnp.asarray(threshold).astype(x.dtype))
