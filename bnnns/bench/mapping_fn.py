"""The mapping networks of an LNS step in isolation, and their FLOPs by counting.

:func:`mapping_grad_fn` is what an LNS train step computes for its mapping networks (forward,
auxiliary loss, STE, backward to theta and W) without the rest of the network;
:func:`mapping_step` builds it for a benchmarked case from its trained parameters, and
:func:`analytic_mapping_flops` counts its multiply-adds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bnnns.bench.cases import Case, binary_options
from bnnns.core.estimators import DEFAULT_WEIGHT_STE, sign, ste_sign
from bnnns.core.losses import lns_loss
from bnnns.core.mapping import make_mapping_net
from bnnns.nn.models import BinaryOptions

__all__ = [
    "mapping_net",
    "analytic_mapping_flops",
    "cotangents",
    "mapping_grad_fn",
    "mapping_step",
]


def mapping_net(opts: BinaryOptions) -> nn.Module:
    """The mapping network the LNS layers of a model with options ``opts`` build."""
    return make_mapping_net(
        opts.mapping_impl, residual=opts.residual_mapping, dtype=opts.mapping_dtype
    )


def analytic_mapping_flops(kernel_shapes: Sequence[tuple[int, ...]]) -> dict[str, float]:
    """FLOPs of the mapping networks of layers with these kernel shapes, by counting.

    A layer with ``c`` input channels and ``c_out`` filters of ``k_h x k_w`` (a dense kernel:
    1x1) runs three 3x3 convs of ``8 c^2`` weights per tap (``c*2c + 2c*2c + 2c*c``) over
    ``c_out`` images. The plain ``SAME`` conv multiplies ``9 k_h k_w`` (position, tap) pairs
    per image (``1296 c_out c^2`` FLOPs forward for 3x3 filters), the valid-taps conv only
    ``(3 k_h - 2)(3 k_w - 2)`` (49 of 81: ``784 c_out c^2``). A train step adds the two
    backward products (wrt the activations and wrt the weights), ~2x the forward: ``step``
    = 3 x forward. FilterBankNorm, ReLU and the loss are not counted (O(c) per pixel).
    """
    plain = valid = 0.0
    for shape in kernel_shapes:
        kh, kw, c, c_out = shape if len(shape) == 4 else (1, 1, *shape)
        per_pair = 2.0 * 8 * c * c * c_out  # FLOPs of one (position, tap) pair, all 3 convs
        plain += per_pair * 9 * kh * kw
        valid += per_pair * (3 * kh - 2) * (3 * kw - 2)
    return {
        "analytic_fwd_flops_plain": plain,
        "analytic_fwd_flops_valid": valid,
        "analytic_step_flops_plain": 3 * plain,
        "analytic_step_flops_valid": 3 * valid,
    }


def cotangents(kernels: dict[str, Any]) -> dict[str, jax.Array]:
    """Fixed random stand-ins (seed 1) for the conv's weight gradient, by layer name."""
    rng = np.random.default_rng(1)
    return {
        n: jnp.asarray(1e-3 * rng.standard_normal(k.shape, dtype=np.float32))
        for n, k in kernels.items()
    }


def mapping_grad_fn(net: nn.Module, opts: BinaryOptions) -> Callable[..., Any]:
    """``jit(grad)`` wrt ``(theta, kernels)`` of what an LNS step computes for its mapping
    networks.

    ``q^ = net(W)``, the auxiliary loss and ``ste_sign(q^)`` contracted with a fixed
    cotangent (standing in for the conv's weight gradient); ``theta``, ``kernels`` and
    ``cotangents`` are dicts by layer name.
    """
    ste = opts.weight_ste or DEFAULT_WEIGHT_STE["lns"]
    clip = None if ste == "identity" else opts.weight_clip

    def loss(theta: Any, kernels: Any, cotangents: Any) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        for n, w in kernels.items():
            q_hat = net.apply({"params": theta[n]}, w)
            q_tilde = sign(jax.lax.stop_gradient(w))
            total += lns_loss(q_hat, q_tilde, opts.rho_pos, opts.rho_neg, opts.aux_reduction)
            total += jnp.sum(ste_sign(q_hat, clip) * cotangents[n])
        return total

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def mapping_step(case: Case, params: Any) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
    """The isolated mapping function of ``case``'s model and its arguments.

    A jitted function computing, for every LNS layer of the model, the mapping network's
    forward ``q^ = f_theta(W)``, the auxiliary loss and the STE, and their backward to theta
    and W, with a fixed random cotangent standing in for the conv's weight gradient
    (:func:`mapping_grad_fn`); its arguments are copies of ``params``' theta and kernels.

    Returns:
        ``(fn, (theta, kernels, cotangents))``, or ``None`` for a model without mapping
        networks.
    """
    flat = traverse_util.flatten_dict(jax.tree.map(jnp.copy, params))  # the step donates params
    prefixes = sorted({k[: k.index("mapping")] for k in flat if "mapping" in k})
    if not prefixes:
        return None
    opts = binary_options(case.model, case.binarizer)
    names = ["/".join(p) for p in prefixes]
    kernels = {n: flat[p + ("kernel",)] for n, p in zip(names, prefixes, strict=True)}
    theta = {
        n: traverse_util.unflatten_dict(
            {k[len(p) + 1 :]: v for k, v in flat.items() if k[: len(p) + 1] == (*p, "mapping")}
        )
        for n, p in zip(names, prefixes, strict=True)
    }
    return mapping_grad_fn(mapping_net(opts), opts), (theta, kernels, cotangents(kernels))
