"""Cost of the mapping networks per model: their FLOPs and time share of the LNS step.

Per model, sign and LNS are timed alternately in one fresh process (``--one m:sign,m:lns``);
one ``cost`` line then sets the mapping networks' XLA FLOPs and time beside the step's and the
analytic counts (``python -m bnnns.bench --costs``).
"""

from __future__ import annotations

import argparse
from typing import Any

from bnnns.bench.cases import Case, defaults
from bnnns.bench.process import child_cmd, emit, run

__all__ = ["run_costs", "cost_line"]


def run_costs(args: argparse.Namespace) -> int:
    """Per model in ``args.models``: its ``step`` and ``pair`` lines, then its ``cost`` line.

    The mapping networks' FLOPs per step (XLA cost analysis: of the isolated mapping function
    and the difference of the two steps), their share of the step's FLOPs and of its time, and
    the analytic figures beside them.

    Returns:
        The exit status: 1 if any model's process failed.
    """
    failed = 0
    for model in args.models.split(","):
        batch, image, width = defaults(model, "quick" if args.quick else "full")
        batch, image, width = args.batch or batch, args.image or image, args.width or width
        cases = [Case(model, b, batch, image, width) for b in ("sign", "lns")]
        rc, lines, err, wall = run(child_cmd(cases, args.warmup, args.steps), args.timeout)
        for obj in lines:
            emit(obj, args.out)
        steps = {x["binarizer"]: x for x in lines if x.get("kind") == "step"}
        pair = next((x for x in lines if x.get("kind") == "pair"), None)
        if rc != 0 or set(steps) != {"sign", "lns"} or pair is None:
            failed += 1
            emit({"kind": "error", "case": f"{model}:sign,lns", "rc": rc, "stderr": err}, args.out)
            continue
        emit(cost_line(model, steps["sign"], steps["lns"], pair), args.out)
    return 1 if failed else 0


def cost_line(
    model: str, sign_res: dict[str, Any], lns: dict[str, Any], pair: dict[str, Any]
) -> dict[str, Any]:
    """The ``cost`` line of ``model`` from its sign and LNS ``step`` lines and their ``pair``."""
    keys = [k for k in lns if k.startswith("analytic_")]
    c: dict[str, Any] = {"kind": "cost", "model": model, "batch": lns["batch"]}
    c.update(image=lns["image"], width=lns["width"], n_mapping_layers=lns["n_mapping_layers"])
    c.update(
        step_flops_sign=sign_res["xla_flops"],
        step_flops_lns=lns["xla_flops"],
        step_flops_lns_minus_sign=lns["xla_flops"] - sign_res["xla_flops"],
        mapping_flops=lns["mapping_xla_flops"],
        mapping_flops_share=lns["mapping_xla_flops"] / lns["xla_flops"],
        step_s_sign=sign_res["step_s_median"],
        step_s_lns=lns["step_s_median"],
        mapping_s=lns["mapping_s_median"],
        mapping_time_share=lns["mapping_s_median"] / lns["step_s_median"],
        lns_over_sign_paired=pair["ratio_median"],
        mapping_time_share_diff=1.0 - 1.0 / pair["ratio_median"],
        **{k: lns[k] for k in keys},
    )
    c["mapping_flops_over_analytic_valid"] = c["mapping_flops"] / c["analytic_step_flops_valid"]
    return c
