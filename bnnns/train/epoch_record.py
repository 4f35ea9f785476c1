"""What an epoch writes: its record (train-metric means, test/validation accuracy and loss, flip
rates of the binary weights against the epoch's start, LNS label agreement) with its log line,
and the per-stage summary that ``summary.json`` keeps of those records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from bnnns.train.steps import TrainState

if TYPE_CHECKING:
    from bnnns.train.stage import Run, Stage

__all__ = [
    "epoch_record",
    "evaluate",
    "flip_stats",
    "host_sums",
    "latent_signs",
    "mean_metrics",
    "stage_summary",
]


def evaluate(run: Run, state: TrainState, eval_fn, split: str) -> dict[str, float]:
    totals = None
    for batch in run.batches(split, train=False):
        out = eval_fn(state, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.tree.map(float, jax.device_get(totals))
    count = max(totals["count"], 1.0)
    return {"accuracy": totals["correct"] / count, "loss": totals["loss"] / count}


def latent_signs(params: Any, layers: dict) -> dict[str, np.ndarray]:
    """``{layer: sign(W)}`` (int8, D10) of the latent kernels of the binary ``layers``."""
    out = {}
    for name in layers:
        node = params
        for part in name.split("/"):
            node = node[part]
        out[name] = np.where(np.asarray(node["kernel"]) >= 0, 1, -1).astype(np.int8)
    return out


def flip_stats(previous: dict, current: dict) -> dict[str, Any]:
    """Flip rates of the binary weights between two snapshots of
    :meth:`bnnns.train.stage.Stage.weight_signs` (D12): pooled and per layer; also
    ``latent_flip_rate`` (``sign(W)`` changed) and ``flip_rate_with_latent`` (binary weight and
    ``sign(W)`` both changed). For sign models the three are equal; for LNS,
    ``flip_rate - flip_rate_with_latent`` is the share of flips made by the mapping alone, with
    ``sign(W)`` unchanged."""
    per_layer, flipped, latent, both, total = {}, 0, 0, 0, 0
    for name, now in current["binary"].items():
        changed = now != previous["binary"][name]
        latent_changed = current["latent"][name] != previous["latent"][name]
        per_layer[name] = float(np.mean(changed))
        flipped += int(np.sum(changed))
        latent += int(np.sum(latent_changed))
        both += int(np.sum(changed & latent_changed))
        total += now.size
    total = max(total, 1)
    return {
        "flip_rate": flipped / total,
        "flip_rate_per_layer": per_layer,
        "latent_flip_rate": latent / total,
        "flip_rate_with_latent": both / total,
    }


def host_sums(sums: dict | None, carried: dict | None = None) -> dict | None:
    """Per-step metric sums on the host as floats, plus those ``carried`` from the epoch's
    steps before the last mid-epoch checkpoint (of this run or of the one resumed)."""
    if sums is None:
        return carried
    host = jax.tree.map(float, jax.device_get(sums))
    return host if carried is None else jax.tree.map(lambda a, b: a + b, host, carried)


def mean_metrics(sums: dict, count: int) -> dict[str, Any]:
    """Epoch means of the per-step train metrics (``sums`` from :func:`host_sums`)."""
    out = {k: float(v) / count for k, v in sums.items() if k != "layers"}
    layers = sums.get("layers", {})
    if layers:
        out["label_agreement"] = {k: float(v["label_agreement"]) / count for k, v in layers.items()}
        out["aux_loss_per_layer"] = {k: float(v["aux_loss"]) / count for k, v in layers.items()}
    return out


def epoch_record(
    stage: Stage, state: TrainState, sums: dict, count: int, epoch: int, step: int, reference
) -> dict[str, Any]:
    """The record of ``stage``'s epoch ``epoch`` (0-based) ending at ``step``: ``sums`` and
    ``count`` are the epoch's train-metric sums (:func:`host_sums`), ``reference`` the
    :meth:`~bnnns.train.stage.Stage.weight_signs` at its start. Process 0 logs one line."""
    run = stage.run
    train = mean_metrics(sums, count)
    record: dict[str, Any] = {
        "stage": stage.name,
        "epoch": epoch + 1,
        "step": step,
        "learning_rate": float(stage.schedule(step - 1)),
        **{
            f"train_{k}": v
            for k, v in train.items()
            if k not in ("label_agreement", "aux_loss_per_layer")
        },
    }
    if "label_agreement" in train:
        record["label_agreement"] = train["label_agreement"]
        record["aux_loss_per_layer"] = train["aux_loss_per_layer"]
    test = evaluate(run, state, stage.eval_fn, "test")
    record.update(test_accuracy=test["accuracy"], test_loss=test["loss"])
    if "validation" in run.splits:
        val = evaluate(run, state, stage.eval_fn, "validation")
        record.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
    record.update(flip_stats(reference, stage.weight_signs(state)))
    if run.is_main:
        extra = f" val {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
        tqdm.write(
            f"[{stage.name}] epoch {epoch + 1}: loss {record['train_loss']:.4f} "
            f"train acc {record['train_accuracy']:.4f} test acc {record['test_accuracy']:.4f}"
            f"{extra} flip {record['flip_rate']:.5f}"
        )
    return record


def stage_summary(name: str, state: TrainState, meta: dict) -> dict[str, Any]:
    """What ``summary.json`` says of stage ``name``, from its records (``meta["history"]``)."""
    history = meta.get("history", [])
    tests = [r["test_accuracy"] for r in history]
    summary = {
        "stage": name,
        "test_accuracy": tests[-1] if tests else None,
        "best_test_accuracy": max(tests) if tests else None,
        "steps": int(state.step),
        "seconds": meta.get("seconds"),
        "epochs": len(history),
    }
    vals = [r["val_accuracy"] for r in history if "val_accuracy" in r]
    if vals:
        best = int(np.argmax(vals))
        summary.update(
            val_accuracy=vals[-1],
            best_val_accuracy=vals[best],
            test_accuracy_at_best_val=tests[best],
        )
    flips = [r["flip_rate"] for r in history]
    if flips:
        summary["flip_rate_per_epoch"] = flips
    if "warm_start" in meta:
        summary["warm_start"] = meta["warm_start"]
    if history and "label_agreement" in history[-1]:
        summary["label_agreement"] = history[-1]["label_agreement"]
    return summary
