"""Optimizers and learning-rate schedules of the paper's recipes (method.md §4, Q12)."""

from __future__ import annotations

import jax
import optax
from ml_collections import ConfigDict

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_schedule", "make_optimizer"]

OPTIMIZERS = ("sgd", "adam")
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


def make_optimizer(opt: ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD-momentum or Adam with the schedule of :func:`make_schedule` and optional weight decay.

    One optimizer over all parameters, W and theta alike, as in Algorithm 1 line 13 (Q12).
    """
    schedule = make_schedule(opt, steps_per_epoch)
    if opt.optimizer == "sgd":
        base = optax.sgd(schedule, momentum=float(opt.momentum) or None, nesterov=False)
    elif opt.optimizer == "adam":
        base = optax.adam(schedule)
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {opt.optimizer!r}")
    if float(opt.weight_decay) > 0:
        return optax.chain(optax.add_decayed_weights(float(opt.weight_decay), _decay_mask), base)
    return base
