"""Pure train / eval steps (jitted by the caller) and per-layer LNS statistics."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bnnns.core.losses import cross_entropy
from bnnns.nn.layers import PROGRESS, collect_aux_loss, set_progress

__all__ = [
    "TrainState",
    "train_step",
    "eval_step",
    "binary_weights",
    "lns_layer_stats",
    "MUTABLE_TRAIN",
    "all_finite",
]

LNS_METRICS = ("aux_loss", "aux_floor", "label_agreement")  # sown per LNS layer

# Collections a train step updates: BatchNorm statistics and the sown LNS losses.
MUTABLE_TRAIN = ("batch_stats", "lns")


@flax.struct.dataclass
class TrainState:
    """Everything a stage carries from step to step.

    Attributes:
      step: number of optimizer steps taken in this stage (scalar int32).
      params: trainable parameters (latent W, mapping theta, BN scale/bias, ...).
      model_state: non-trainable collections (``batch_stats``; ``lns_labels`` for D1
        "pretrained").
      opt_state: optimizer state of ``params``.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any


def _layer_name(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def lns_layer_stats(lns_collection: Any) -> dict[str, dict[str, jax.Array]]:
    """``{layer: {"aux_loss": l~_i, "aux_floor": min l~_i, "label_agreement": a_i}}`` from a
    sown ``"lns"`` collection."""
    stats: dict[str, dict[str, jax.Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(lns_collection)[0]:
        keys = [getattr(k, "key", None) for k in path]
        metric = next(k for k in reversed(keys) if k in LNS_METRICS)
        layer = _layer_name(path[: keys.index(metric)])
        stats.setdefault(layer, {})[metric] = jnp.asarray(leaf, jnp.float32)
    return stats


def all_finite(*trees: Any) -> jax.Array:
    """True iff every floating-point entry of ``trees`` is finite (a scalar, on device)."""
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(trees)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    alpha: float,
    total_steps: int = 0,
) -> tuple[TrainState, dict[str, Any]]:
    """One SGD step on ``L = l_cls + alpha * sum_i l~_i`` (Eq. 21; Algorithm 1 lines 9-13).

    ``alpha`` multiplies whatever auxiliary losses the model's LNS layers sow (none for sign
    models). A model with IR-Net's EDE (a ``"progress"`` collection in ``model_state``) gets
    the progress ``state.step / total_steps`` of its stage, an array computed here (IR-Net's
    ``i / N``; :func:`bnnns.nn.layers.set_progress`); other models are untouched. Returns
    the new state and this step's metrics (batch means; per-layer LNS stats;
    ``finite``: whether the loss and the whole new state are finite, checked here on device so
    that the loop can refuse to save a non-finite state without a host sync per step).
    """

    model_state = dict(state.model_state)
    if PROGRESS in model_state:
        if total_steps < 1:
            raise ValueError(
                f"train_step: the model uses IR-Net's EDE, whose schedule needs the stage's "
                f"total_steps >= 1, got {total_steps!r}"
            )
        progress = state.step.astype(jnp.float32) / total_steps
        model_state = set_progress(model_state, progress)

    def loss_fn(params):
        variables = {"params": params, **model_state}
        logits, updates = model.apply(
            variables, batch["image"], train=True, mutable=list(MUTABLE_TRAIN)
        )
        ce = cross_entropy(logits, batch["label"], batch["mask"])
        aux = collect_aux_loss(updates.get("lns", {}))
        return ce + alpha * aux, (logits, updates, ce, aux)

    grads, (logits, updates, ce, aux) = jax.grad(loss_fn, has_aux=True)(state.params)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, param_updates)
    if "batch_stats" in updates:
        model_state["batch_stats"] = updates["batch_stats"]
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    metrics = {
        "loss": ce + alpha * aux,
        "ce": ce,
        "aux": aux,
        "accuracy": jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0),
        "grad_norm": optax.global_norm(grads),
        "layers": lns_layer_stats(updates.get("lns", {})),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state
    )
    metrics["finite"] = all_finite(metrics["loss"], params, model_state, opt_state)
    return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model: nn.Module) -> dict:
    """Sums over the (masked) batch: ``correct``, ``loss`` (cross-entropy) and ``count``."""
    logits = model.apply({"params": state.params, **state.model_state}, batch["image"], train=False)
    mask = batch["mask"]
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, batch["label"][:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
        "correct": jnp.sum(correct * mask),
        "loss": jnp.sum(nll * mask),
        "count": jnp.sum(mask),
    }


def binary_weights(state: TrainState, dummy_input: jax.Array, *, model: nn.Module) -> dict:
    """``{layer: int8 binary weights}`` the model computes with (for flip rates, D12, export)."""
    _, cols = model.apply(
        {"params": state.params, **state.model_state},
        dummy_input,
        train=False,
        mutable=["binary_weights"],
    )
    flat = jax.tree_util.tree_flatten_with_path(cols["binary_weights"])[0]
    return {_layer_name(path[:-2]): leaf for path, leaf in flat}
