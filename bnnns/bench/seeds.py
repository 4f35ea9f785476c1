"""Wall time of S seeds in one vmapped train step against one seed (``config.num_seeds``).

    python -m bnnns.bench.seeds [--config configs/cifar10_resnet20_lns.py] [--stage pretrain]
                                [--seeds 1,3,5] [--steps 10]

For each S: the train step of ``bnnns.train.seeds.multi_seed_step`` on S replicas (own init,
own random batches of ``config.batch_size``) on ``jax.devices()[0]``, jitted with the state
donated as in training; compile time and the median of ``--steps`` timed steps after 2 warm-up
steps. One JSON line per S: ``ms_per_step``, and ``vs_separate`` = ms_per_step / (S x the
S = 1 step), the cost of S seeds in one program relative to S separate runs (below 1: cheaper).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bnnns.train.default_config import load_config_file
from bnnns.train.optim import make_optimizer
from bnnns.train.seeds import multi_seed_step, stack
from bnnns.train.stage import build_model
from bnnns.train.stage_init import fresh_state

__all__ = ["main", "time_seeds"]

SHAPES = {"mnist": ((28, 28, 1), 10), "tfds:cifar10": ((32, 32, 3), 10)}


def time_seeds(config, stage: str, num_seeds: int, steps: int) -> dict:
    shape, classes = SHAPES.get(config.dataset, ((224, 224, 3), 1000))
    model = build_model(config, classes, stage)
    tx = make_optimizer(config[stage], 100, None)
    dummy = jnp.zeros((1, *shape), jnp.float32)
    init = jax.jit(functools.partial(fresh_state, model, tx))
    state = stack([init(jax.random.key(s), dummy) for s in range(num_seeds)])
    rng = np.random.default_rng(0)
    b = config.batch_size
    batch = {
        "image": jnp.asarray(rng.normal(size=(num_seeds, b, *shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, classes, (num_seeds, b)), jnp.int32),
        "mask": jnp.ones((num_seeds, b), jnp.float32),
    }
    alpha = float(config.lns.alpha) if stage == "lns" else 0.0
    step = jax.jit(
        functools.partial(multi_seed_step, model=model, tx=tx, alpha=alpha), donate_argnums=(0,)
    )
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {
        "seeds": num_seeds,
        "stage": stage,
        "batch": b,
        "device": jax.devices()[0].device_kind,
        "compile_s": round(compile_s, 2),
        "ms_per_step": round(1e3 * statistics.median(times), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bnnns.bench.seeds", description=__doc__)
    p.add_argument("--config", default="configs/cifar10_resnet20_lns.py")
    p.add_argument("--stage", default="pretrain", choices=("pretrain", "finetune", "lns"))
    p.add_argument("--seeds", default="1,3,5")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    config = load_config_file(args.config)
    base = None
    for s in [int(x) for x in args.seeds.split(",")]:
        row = time_seeds(config, args.stage, s, args.steps)
        base = base or (row["ms_per_step"] if s == 1 else None)
        if base:
            row["vs_separate"] = round(row["ms_per_step"] / (s * base), 3)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
