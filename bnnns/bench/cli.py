"""Train-step benchmark: step time, compile time, memory and LNS overhead; peers side by side.

    python -m bnnns.bench                       # resnet20 (b128) + birealnet18 (b8): float/sign/lns
    python -m bnnns.bench --quick               # CI-sized, under 3 minutes on 2 CPU cores
    python -m bnnns.bench --one M:B[,M:B...]    # cases in this process, interleaved (a pair)
    python -m bnnns.bench --peers --rounds 3    # vs Larq / PyTorch / naive JAX, interleaved
    python -m bnnns.bench --deploy              # artifact size, predict vs eval (bench.deploy)
    python -m bnnns.bench --mapping-ab          # birealnet18 mapping nets: new vs reference
    python -m bnnns.bench --costs               # mapping FLOPs / time share per model
    python -m bnnns.bench --gpu-step            # birealnet18 ImageNet step on an accelerator
    python -m bnnns.bench --profile M:B         # per-XLA-op time of one step (bench.profile)

Prints one JSON object per line (``kind``: ``step``, ``pair``, ``summary``, ``error``,
``peer_run``, ``peer_summary``, ``target``, ``mapping_ab``, ``cost``, ``gpu_step``,
``profile_op``, ``profile``);
docs/bench.md explains every field. Each configuration runs in a fresh process (``--one``) so
that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bnnns.bench.accelerator import run_gpu_step
from bnnns.bench.cases import BINARIZERS, MODELS, Case, defaults
from bnnns.bench.costs import run_costs
from bnnns.bench.mapping_ab import run_mapping_ab
from bnnns.bench.peers import run_peers
from bnnns.bench.process import emit
from bnnns.bench.step import run_cases, run_models

__all__ = ["parse_args", "main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m bnnns.bench``, with each mode's defaults filled in."""
    p = argparse.ArgumentParser(prog="python -m bnnns.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized: 2 warm-up + 5 timed steps")
    p.add_argument("--models", default=None, help=f"any of {MODELS} or the zoo's models")
    p.add_argument("--binarizers", default="float,sign,lns", help=f"subset of {BINARIZERS}")
    p.add_argument("--batch", type=int, default=0, help="override the models' batch size")
    p.add_argument("--image", type=int, default=0, help="override the image size (H = W)")
    p.add_argument("--width", type=int, default=0, help="override the base channel width")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first")
    p.add_argument("--steps", type=int, default=None, help="timed steps (pairs with --one a,b)")
    p.add_argument("--one", default=None, help="run MODEL:BIN[,MODEL:BIN] in this process")
    p.add_argument("--peers", action="store_true", help="bnnns vs peer frameworks, interleaved")
    p.add_argument("--rounds", type=int, default=3, help="--peers: rounds")
    p.add_argument("--peer-configs", default="", help="--peers: subset of the config names")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per child process")
    p.add_argument("--mapping-ab", action="store_true", help="mapping nets: new vs reference")
    p.add_argument("--costs", action="store_true", help="mapping FLOPs and time share per model")
    p.add_argument("--gpu-step", action="store_true", help="birealnet18 ImageNet step, b64/256")
    p.add_argument("--gpu-batches", default="64,256", help="--gpu-step: batches (max: search)")
    p.add_argument("--gpu-max-batch", type=int, default=4096, help="--gpu-step: search limit")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--deploy", action="store_true", help="artifact size and predict speed")
    p.add_argument("--profile", default=None, help="MODEL:BIN: per-XLA-op time of its step")
    a = p.parse_args(argv)
    if a.models is None:
        a.models = "birealnet18" if (a.mapping_ab or a.gpu_step) else "resnet20,birealnet18"
    if a.warmup is None:
        a.warmup = 1 if a.mapping_ab else (2 if a.quick else (5 if a.peers else 3))
    if a.steps is None:
        if a.mapping_ab:
            a.steps = 2 if a.quick else 5
        elif a.costs:
            a.steps = 5 if a.quick else 10
        else:
            a.steps = 5 if a.quick else (50 if a.peers else 20)
    return a


def _run_one(args: argparse.Namespace) -> int:
    """``--one M:B[,M:B...]``: time those cases in this process (sizes of the first model)."""
    names = [n.split(":") for n in args.one.split(",")]
    batch, image, width = defaults(names[0][0], "full")
    cases = [
        Case(m, b, args.batch or batch, args.image or image, args.width or width) for m, b in names
    ]
    for res in run_cases(cases, args.warmup, args.steps):
        emit(res, args.out)
    return 0


def _run_profile(args: argparse.Namespace) -> int:
    """``--profile M:B``: per-op time of that case's step (:mod:`bnnns.bench.profile`)."""
    from bnnns.bench.profile import profile_case

    model, binarizer = args.profile.split(":")
    batch, image, width = defaults(model, "quick" if args.quick else "full")
    case = Case(model, binarizer, args.batch or batch, args.image or image, args.width or width)
    for line in profile_case(case, args.warmup, args.steps):
        emit(line, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark the flags choose; returns the exit status."""
    args = parse_args(argv)
    if args.deploy:  # bnnns/bench/deploy.py
        from bnnns.bench.deploy import run_deploy

        return run_deploy(args.quick, lambda obj: emit(obj, args.out))
    if args.profile:
        return _run_profile(args)
    if args.one:
        return _run_one(args)
    if args.peers:
        return run_peers(args)
    if args.mapping_ab:
        return run_mapping_ab(args)
    if args.costs:
        return run_costs(args)
    if args.gpu_step:
        return run_gpu_step(args)
    return run_models(args)
