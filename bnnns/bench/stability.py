"""Is an LNS recipe stable? A few dozen steps of it on mock data, before a long run.

A recipe's optimizer, learning rate, alpha, rho and reduction decide whether the joint step on
``L = l_cls + alpha * sum_i l~_i`` (Eq. 21) is stable; the data hardly does. This probe runs the
recipe's own model, optimizer and warm start on random images with learnable labels: it trains
the sign BNN of the pretrain recipe for a few steps ("a briefly trained state"), transfers it to
the LNS model, warm-starts the mapping networks (D7) and then runs ``steps`` LNS steps for each
alpha, recording the loss and the auxiliary loss of every step. With the summed auxiliary loss
of Eq. 17 (the old D3) SGD at the paper's lr 0.01 diverges; with the mean (D3) it does not
(issue 9). The images may be smaller than the data set's: the mapping networks, where the sum
diverged, see only the kernels, whose sizes do not depend on the image.

    python -m bnnns.bench.stability --config configs/cifar10_resnet20_lns.py \
        --pretrain-config configs/cifar10_resnet20_pretrain.py --reductions mean sum
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from bnnns.train.default_config import load_config_file
from bnnns.train.optim import make_optimizer
from bnnns.train.stage_init import fresh_state, transfer_pretrained, warm_start_mapping
from bnnns.train.steps import train_step
from bnnns.train.train_lib import build_model, lns_lr_scales

__all__ = ["mock_batches", "probe_stability", "is_stable", "main"]


def mock_batches(
    n: int, *, batch: int, image: tuple[int, int, int], classes: int, seed: int
) -> Iterator[dict[str, jax.Array]]:
    """``n`` random batches of a learnable task: each class is a fixed random prototype image,
    and an example is its class's prototype plus as much Gaussian noise (a few steps of training
    fit it, as fine-tuning starts from a trained BNN). The prototypes depend only on ``classes``
    and ``image``; ``seed`` draws the examples."""
    prototypes = np.random.default_rng(0).normal(size=(classes, *image))
    rng = np.random.default_rng(seed)
    for _ in range(n):
        y = rng.integers(0, classes, batch)
        x = (prototypes[y] + rng.normal(size=(batch, *image))).astype(np.float32)
        yield {
            "image": jnp.asarray(x),
            "label": jnp.asarray(y.astype(np.int32)),
            "mask": jnp.ones(batch),
        }


def probe_stability(
    lns_config: ConfigDict,
    pretrain_config: ConfigDict,
    *,
    alphas: Sequence[float] | None = None,
    reductions: Sequence[str] | None = None,
    steps: int = 30,
    pretrain_steps: int = 60,
    batch: int = 32,
    image: tuple[int, int, int] = (8, 8, 3),
    classes: int = 10,
    steps_per_epoch: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the LNS recipe of ``lns_config`` for ``steps`` steps on mock data, per reduction and
    alpha (default: the config's own), from a sign BNN trained ``pretrain_steps`` steps with
    ``pretrain_config``'s recipe and a warm start of the mapping (D7, run with the config's
    reduction; the warm-started theta is the same function under either reduction).

    ``steps_per_epoch`` places the probe inside the schedule's first epoch (the recipe's
    initial lr). Returns ``{"pretrain": {...}, "warm_start": {...}, "layers": n, "runs":
    [{"reduction", "alpha", "loss": [...], "aux": [...], "seconds"}]}``; ``aux`` is
    ``sum_i l~_i`` over the ``n`` LNS layers, each reduced as the run's reduction says (Eq. 16's
    mean, D3, or Eq. 17's sum).
    """
    alphas = [float(lns_config.lns.alpha)] if alphas is None else [float(a) for a in alphas]
    reductions = [lns_config.lns.reduction] if reductions is None else list(reductions)
    dummy = jnp.zeros((1, *image))
    data = functools.partial(mock_batches, batch=batch, image=image, classes=classes)

    t0 = time.time()
    pre_model = build_model(pretrain_config, classes, "pretrain")
    pre_tx = make_optimizer(pretrain_config.pretrain, steps_per_epoch)
    state = fresh_state(pre_model, pre_tx, jax.random.key(seed), dummy)
    pre_step = jax.jit(  # total_steps: EDE's progress, when the config selects it
        functools.partial(
            train_step, model=pre_model, tx=pre_tx, alpha=0.0, total_steps=pretrain_steps
        )
    )
    for b in data(pretrain_steps, seed=seed):
        state, pre_metrics = pre_step(state, b)
    pretrain = {
        "steps": pretrain_steps,
        "ce": float(pre_metrics["ce"]),
        "accuracy": float(pre_metrics["accuracy"]),
        "seconds": time.time() - t0,
    }
    t0 = time.time()
    model = build_model(lns_config, classes, "lns")
    tx = make_optimizer(lns_config.lns, steps_per_epoch, lns_lr_scales(lns_config, model, dummy))
    lns = fresh_state(model, tx, jax.random.key(seed + 1), dummy)
    lns = transfer_pretrained(lns, state, model, tx, dummy)
    lns, warm = warm_start_mapping(
        lns,
        model,
        dummy,
        max_steps=lns_config.lns.warmup_steps,
        target=lns_config.lns.warmup_target,
        tolerance=lns_config.lns.get("warmup_tolerance", 0.0),
        learning_rate=lns_config.lns.warmup_lr,
    )
    warm["seconds"] = time.time() - t0
    runs = []
    for reduction in reductions:
        config = ConfigDict(lns_config.to_dict())
        config.lns.reduction = reduction
        model = build_model(config, classes, "lns")
        step = jax.jit(
            lambda s, b, a, model=model: train_step(
                s, b, model=model, tx=tx, alpha=a, total_steps=steps
            )
        )
        for alpha in alphas:
            t0 = time.time()
            s, loss, aux = lns, [], []
            for b in data(steps, seed=seed + 2):
                s, metrics = step(s, b, jnp.float32(alpha))
                loss.append(float(metrics["loss"]))
                aux.append(float(metrics["aux"]))
            runs.append(
                {
                    "reduction": reduction,
                    "alpha": alpha,
                    "loss": loss,
                    "aux": aux,
                    "seconds": time.time() - t0,
                }
            )
    layers = len(warm.pop("agreement"))  # one entry per LNS layer
    return {"pretrain": pretrain, "warm_start": warm, "layers": layers, "runs": runs}


def is_stable(run: dict[str, Any], layers: int, *, window: int = 5, slack: float = 0.05) -> bool:
    """The probe's criterion: every loss finite, and the auxiliary loss not growing: the mean
    of its last ``window`` steps at most the mean of its first ``window`` plus ``slack`` per
    layer (each layer's mean loss is O(1) per element; 0.05 is 5% of the largest label-noise
    penalty), and never above one per layer in magnitude."""
    loss, aux = np.asarray(run["loss"]), np.asarray(run["aux"])
    if not (np.all(np.isfinite(loss)) and np.all(np.isfinite(aux))):
        return False
    grew = aux[-window:].mean() > aux[:window].mean() + slack * layers
    return bool(not grew and np.abs(aux).max() <= layers)


def _format(result: dict[str, Any]) -> str:
    layers, lines = result["layers"], []
    p, w = result["pretrain"], result["warm_start"]
    lines.append(
        f"brief pretrain: {p['steps']} steps, last batch ce {p['ce']:.3g}, accuracy "
        f"{p['accuracy']:.3f} ({p['seconds']:.0f} s)"
    )
    lines.append(
        f"warm start: {w['steps']} steps, converged={w['converged']}, aux {w['aux_loss']:.4g}, "
        f"excess {w['excess_loss']:.3g}, min agreement {w['min_agreement']:.4f} ({layers} layers, "
        f"{w['seconds']:.0f} s)"
    )
    lines.append(
        f"{'reduction':>9} {'alpha':>5} {'aux 1st 5':>10} {'aux last 5':>10} "
        f"{'max |aux|':>10} {'finite':>8} {'seconds':>7}  verdict"
    )
    for r in result["runs"]:
        aux = np.asarray(r["aux"])
        finite = int(np.sum(np.isfinite(r["loss"])))
        head, tail = aux[:5].mean(), aux[-5:].mean()
        peak = np.nanmax(np.abs(aux)) if np.any(np.isfinite(aux)) else math.nan
        verdict = "stable" if is_stable(r, layers) else "UNSTABLE"
        lines.append(
            f"{r['reduction']:>9} {r['alpha']:>5g} {head:>10.4g} {tail:>10.4g} "
            f"{peak:>10.4g} {finite:>4}/{len(aux):<3} {r['seconds']:>7.0f}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the LNS recipe's config file")
    parser.add_argument("--pretrain-config", required=True, help="its pretrain recipe")
    parser.add_argument("--alphas", type=float, nargs="+", default=None)
    parser.add_argument("--reductions", nargs="+", choices=("mean", "sum"), default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--pretrain-steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image", type=int, nargs=3, default=(8, 8, 3), metavar=("H", "W", "C"))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the histories here")
    args = parser.parse_args(argv)
    result = probe_stability(
        load_config_file(args.config),
        load_config_file(args.pretrain_config),
        alphas=args.alphas,
        reductions=args.reductions,
        steps=args.steps,
        pretrain_steps=args.pretrain_steps,
        batch=args.batch,
        image=tuple(args.image),
        classes=args.classes,
        seed=args.seed,
    )
    print(_format(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return 0 if all(is_stable(r, result["layers"]) for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
