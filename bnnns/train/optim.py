"""Optimizers and learning-rate schedules of the paper's recipes (method.md §4, Q12)."""

from __future__ import annotations

import math

import jax
import optax
from ml_collections import ConfigDict

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_schedule", "make_optimizer", "mapping_lr_scales"]

OPTIMIZERS = ("sgd", "adam", "bop")
SCHEDULES = ("constant", "cosine", "step")


def make_schedule(opt: ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step: ``constant``, ``cosine`` (to 0) or ``step`` (x ``decay_factor``
    at each of ``decay_epochs``), after ``warmup_epochs`` of linear warm-up."""
    total = max(1, int(opt.epochs * steps_per_epoch))
    warmup = int(opt.get("warmup_epochs", 0) * steps_per_epoch)
    lr = float(opt.learning_rate)
    if opt.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif opt.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(1, total - warmup))
    elif opt.schedule == "step":
        boundaries = {
            int(e * steps_per_epoch) - warmup: float(opt.decay_factor) for e in opt.decay_epochs
        }
        main = optax.piecewise_constant_schedule(lr, boundaries)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {opt.schedule!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _decay_mask(params):
    """Weight decay on conv/dense kernels only (not biases, norms, PReLU slopes)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def mapping_lr_scales(params, scale: float | str) -> dict:
    """Per-leaf learning-rate multipliers: ``scale`` on the LNS mapping networks' theta, 1 on
    everything else (W, BatchNorm, stem, head).

    ``scale`` is a number, or ``"1/N"``: each mapping network gets ``1/N`` with ``N`` the
    element count of the kernel it binarizes (the weight the mean reduction of D3 gives each
    element in Eq. 16). Algorithm 1 line 13 uses one ``eta`` for W and theta (``scale=1``).

    Example:
        >>> import jax.numpy as jnp
        >>> p = {"conv": {"kernel": jnp.zeros((3, 3, 2, 4)), "mapping": {"w": jnp.zeros(2)}}}
        >>> mapping_lr_scales(p, "1/N")["conv"]["mapping"]["w"]
        0.013888888888888888
    """
    from flax import traverse_util

    flat = traverse_util.flatten_dict(params)
    out = {}
    for path, _ in flat.items():
        if "mapping" not in path:
            out[path] = 1.0
            continue
        if scale == "1/N":
            owner = path[: path.index("mapping")]
            out[path] = 1.0 / flat[(*owner, "kernel")].size
        else:
            out[path] = float(scale)
    return traverse_util.unflatten_dict(out)


def parse_lr_scale(text: str | float) -> float | str | None:
    """``"1/N"`` or a number >= 0 (given as a string or a number); None when it is neither.

    Example:
        >>> parse_lr_scale("0.1"), parse_lr_scale("1/N"), parse_lr_scale("-1")
        (0.1, '1/N', None)
    """
    if text == "1/N":
        return "1/N"
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _scale_by_tree(scales) -> optax.GradientTransformation:
    """Multiply each update leaf by a constant from ``scales`` (same tree as the params)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    opt: ConfigDict,
    steps_per_epoch: int,
    lr_scales: dict | None = None,
    bop_pattern: str | None = None,
) -> optax.GradientTransformation:
    """SGD-momentum or Adam with the schedule of :func:`make_schedule` and optional weight decay,
    or Bop.

    One optimizer over all parameters, W and theta alike, as in Algorithm 1 line 13 (Q12).
    ``lr_scales`` (a tree like the params, e.g. from :func:`mapping_lr_scales`) multiplies each
    parameter's step; for SGD-momentum and Adam that is exactly a per-parameter learning rate.
    ``"bop"``: Bop (``opt.bop_tau``, ``opt.bop_gamma``; :mod:`bnnns.train.bop`) on the
    parameters whose path matches ``bop_pattern`` (the binary kernels,
    :func:`bnnns.train.bop.binary_kernel_pattern`), SGD-momentum with the schedule and weight
    decay on the rest.
    """
    schedule = make_schedule(opt, steps_per_epoch)
    if opt.optimizer in ("sgd", "bop"):
        base = optax.sgd(schedule, momentum=float(opt.momentum) or None, nesterov=False)
    elif opt.optimizer == "adam":
        base = optax.adam(schedule)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {opt.optimizer!r}")
    if lr_scales is not None:
        base = optax.chain(base, _scale_by_tree(lr_scales))
    if float(opt.weight_decay) > 0:
        base = optax.chain(optax.add_decayed_weights(float(opt.weight_decay), _decay_mask), base)
    if opt.optimizer != "bop":
        return base
    if bop_pattern is None:
        raise ValueError("optimizer 'bop' needs bop_pattern: the binary kernels it trains")
    from bnnns.train.bop import with_bop

    return with_bop(base, bop_pattern, float(opt.bop_tau), float(opt.bop_gamma))
