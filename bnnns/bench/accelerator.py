"""The birealnet18 ImageNet train step on an accelerator (``python -m bnnns.bench --gpu-step``;
``--models`` names one other model, e.g. ``mnist_cnn`` for the tests' CPU run).

Per batch size, sign, LNS and LNS with bfloat16 mapping networks are compiled and timed
alternately in one fresh process on the default device; one ``gpu_step`` line per batch, and
with ``max`` the largest batch that ran (``gpu_step_max``).
"""

from __future__ import annotations

import argparse
from typing import Any

from bnnns.bench.cases import Case
from bnnns.bench.process import child_cmd, emit, run

__all__ = ["GPU_BINARIZERS", "run_gpu_step", "gpu_step_line"]

GPU_BINARIZERS = ("sign", "lns", "lns_bf16")


def gpu_step_line(
    model: str,
    batch: int,
    image: int,
    width: int,
    wall: float,
    steps: dict[str, dict[str, Any]],
    pairs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The ``gpu_step`` line of one batch from its ``step`` lines and ``pair`` lines (both by
    binarizer)."""
    line: dict[str, Any] = {"kind": "gpu_step", "model": model, "batch": batch, "image": image}
    line.update(width=width, device=steps["sign"]["device"], wall_s=wall)
    for b, r in steps.items():
        line.update({f"{b}_step_s": r["step_s_median"], f"{b}_img_per_s": r["img_per_s"]})
        line.update({f"{b}_xla_peak_mib": r.get("xla_peak_mib")})
    line["device_peak_mib"] = steps["sign"].get("device_peak_mib")
    for b in ("lns", "lns_bf16"):
        line[f"{b}_over_sign"] = pairs[b]["ratio_median"] if b in pairs else None
    return line


def run_gpu_step(args: argparse.Namespace) -> int:
    """birealnet18 (or the one model of ``--models``) at ImageNet shapes on the default device,
    per batch of ``--gpu-batches``.

    ``max`` in ``--gpu-batches``: double the largest listed batch until a run fails (out of
    memory) or passes ``--gpu-max-batch``.

    Returns:
        The exit status: 1 if a listed batch failed (the failure that ends a ``max`` search
        does not count).
    """
    models = args.models.split(",")
    if len(models) != 1:
        raise SystemExit(f"--gpu-step times one model; got --models {args.models!r}")
    (model,) = models
    batches = [b for b in args.gpu_batches.split(",") if b != "max"]
    search = "max" in args.gpu_batches.split(",")
    image, width = args.image or 224, args.width or 64
    failed, largest = 0, None
    todo = [int(b) for b in batches]
    while todo:
        batch = todo.pop(0)
        cases = [Case(model, b, batch, image, width) for b in GPU_BINARIZERS]
        rc, lines, err, wall = run(child_cmd(cases, args.warmup, args.steps), args.timeout)
        for obj in lines:
            emit(obj, args.out)
        steps = {x["binarizer"]: x for x in lines if x.get("kind") == "step"}
        pairs = {x["second"].split(":")[1]: x for x in lines if x.get("kind") == "pair"}
        if rc != 0 or set(steps) != set(GPU_BINARIZERS):
            error = {"kind": "error", "case": f"{model}@{batch}", "rc": rc, "stderr": err}
            emit(error, args.out)
            if not (search and not todo and largest is not None and batch > largest):
                failed += 1
            continue
        largest = batch if largest is None else max(largest, batch)
        emit(gpu_step_line(model, batch, image, width, wall, steps, pairs), args.out)
        if search and not todo and batch * 2 <= args.gpu_max_batch:
            todo.append(batch * 2)
    if search:
        emit({"kind": "gpu_step_max", "largest_batch_that_ran": largest}, args.out)
    return 1 if failed else 0
