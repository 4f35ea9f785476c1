"""bnnns side by side with the peer frameworks (Larq, PyTorch, naive JAX), interleaved.

Each config is a fresh process; ``rounds`` rounds run every config once, the order rotated by
one config per round, and the summary gives per-config medians, bnnns' per-round ratios and
the targets (``python -m bnnns.bench --peers``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from typing import Any

from bnnns.bench.process import REPO, emit, run

__all__ = ["PEERS_DIR", "PEERBENCH", "peer_configs", "peer_figure", "run_peers", "peer_summary"]

# The peer scripts: $BNNNS_PEERS, else shared/peers beside the repository (/work/shared/peers).
PEERS_DIR = os.environ.get("BNNNS_PEERS", os.path.join(os.path.dirname(REPO), "shared", "peers"))
# The peers' virtual environments: $PEERBENCH/venv_{tf,torch}.
PEERBENCH = os.environ.get("PEERBENCH", os.path.expanduser("~/peerbench"))


def peer_configs(warmup: int, steps: int) -> list[tuple[str, str, list[str]]]:
    """``(name, interpreter path, argv)`` of every side-by-side config; argv[0] is a script
    (or ``-m``)."""
    py, venv = sys.executable, lambda v: os.path.join(PEERBENCH, f"venv_{v}", "bin", "python")
    n = ["--warmup", str(warmup), "--steps", str(steps)]
    pairs = ["--warmup", "3", "--pairs", str(max(5, steps // 2))]
    peer = lambda s: os.path.join(PEERS_DIR, s)
    one = lambda cases, *extra: ["-m", "bnnns.bench", "--one", cases, "--batch", "128", *extra]
    paired = ["--warmup", "3", "--steps", str(max(5, steps // 2))]
    # bnnns with the native weight gradient (bnnns.core.conv_dw), off by default
    env, native_dw = shutil.which("env") or "/usr/bin/env", ["BNNNS_CONV_DW=native", py]
    return [
        ("bnnns_sign", py, one("resnet20_peer:sign", *n)),
        ("bnnns_lns", py, one("resnet20_peer:lns", *n)),
        ("bnnns_sign_native_dw", env, [*native_dw, *one("resnet20_peer:sign", *n)]),
        ("bnnns_lns_native_dw", env, [*native_dw, *one("resnet20_peer:lns", *n)]),
        ("bnnns_pair", py, one("resnet20_peer:sign,resnet20_peer:lns", *paired)),
        ("jax_plain", py, [peer("bench_jax.py"), "--variant", "plain", *n]),
        ("jax_mapnet", py, [peer("bench_jax.py"), "--variant", "mapnet", *n]),
        ("jax_pair", py, [peer("bench_jax_mapnet_ab.py"), "--batches", "128", *pairs]),
        ("larq_tf", venv("tf"), [peer("bench_larq.py"), "--mode", "tf", *n]),
        ("torch_eager", venv("torch"), [peer("bench_torch.py"), "--mode", "eager", *n]),
        ("torch_compile", venv("torch"), [peer("bench_torch.py"), "--mode", "compile", *n]),
    ]


def peer_figure(name: str, lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step time (or, for ``*_pair``, the paired LNS/sign ratio) a config reports."""
    for obj in lines:
        if (
            name.endswith("_pair")
            and obj.get("kind", "pair") == "pair"
            and ("ratio_median" in obj or "pair_ratio_median" in obj)
        ):
            return {"pair_ratio_median": obj.get("ratio_median", obj.get("pair_ratio_median"))}
        if not name.endswith("_pair") and "step_s_median" in obj:
            keys = ("step_s_median", "step_s_min", "img_per_s", "peak_rss_mib", "compile_s")
            return {k: obj[k] for k in keys if k in obj}
    return None


def run_peers(args: argparse.Namespace) -> int:
    """``args.rounds`` rounds; in each, every config once as a fresh process, order rotated by
    one config per round. Then per config the median over rounds and bnnns' ratios, and targets.

    Returns:
        The exit status: 1 if any config that ran failed (missing peers are skipped).
    """
    configs = peer_configs(args.warmup, args.steps)
    if args.peer_configs:
        keep = set(args.peer_configs.split(","))
        configs = [c for c in configs if c[0] in keep]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in configs}
    failed = 0
    for r in range(args.rounds):
        k = r % len(configs)
        for name, python, argv in configs[k:] + configs[:k]:
            rec: dict[str, Any] = {"kind": "peer_run", "round": r, "config": name}
            script = argv[0] if argv[0].endswith(".py") else None
            if not os.path.exists(python) or (script and not os.path.exists(script)):
                rec.update(status="skipped", reason=f"missing {python if script else ''} {script}")
                emit(rec, args.out)
                continue
            rc, lines, err, wall = run([python, *argv], args.timeout)
            fig = peer_figure(name, lines)
            rec.update(wall_s=wall, rc=rc)
            if rc != 0 or fig is None:
                failed += 1
                rec.update(status="failed", stderr=err)
            else:
                rec.update(status="ok", **fig)
                runs[name].append(rec)
            emit(rec, args.out)
    for s in peer_summary(runs):
        emit(s, args.out)
    return 1 if failed else 0


def _per_round(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> list[float]:
    """Ratios ``a / b`` of the step medians of the rounds in which both ran."""
    sa = {x["round"]: x["step_s_median"] for x in runs.get(a, [])}
    sb = {x["round"]: x["step_s_median"] for x in runs.get(b, [])}
    return [sa[r] / sb[r] for r in sorted(sa) if r in sb]


def peer_summary(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``peer_summary`` lines (one per config) and ``target`` lines from the runs by config."""
    out = []
    for name, recs in runs.items():
        s: dict[str, Any] = {"kind": "peer_summary", "config": name, "rounds": len(recs)}
        if not recs:
            s["status"] = "skipped"
        elif name.endswith("_pair"):
            s["pair_ratio_median"] = statistics.median(x["pair_ratio_median"] for x in recs)
        else:
            s["step_s_median"] = statistics.median(x["step_s_median"] for x in recs)
            s["img_per_s"] = 128 / s["step_s_median"]
            for mine in ("bnnns_sign", "bnnns_lns"):
                ratios = _per_round(runs, mine, name)
                if ratios and name != mine:
                    s[f"{mine}_over_this"] = statistics.median(ratios)
        out.append(s)
    pairs = {r["config"]: r.get("pair_ratio_median") for r in out}
    targets = [
        ("bnnns_sign_over_jax_plain", _per_round(runs, "bnnns_sign", "jax_plain"), 1.05),
        ("bnnns_lns_over_bnnns_sign", _per_round(runs, "bnnns_lns", "bnnns_sign"), 1.25),
        ("jax_mapnet_over_jax_plain", _per_round(runs, "jax_mapnet", "jax_plain"), None),
    ]
    for name, ratios, target in targets:
        value = statistics.median(ratios) if ratios else None
        t: dict[str, Any] = {"kind": "target", "name": name, "value": value, "target": target}
        met = None if value is None or target is None else value <= target
        t.update(rounds=len(ratios), met=met)
        out.append(t)
    paired = (
        ("bnnns_pair", "bnnns_pair_lns_over_sign", 1.25),
        ("jax_pair", "jax_pair_mapnet_over_plain", None),
    )
    for config, name, target in paired:
        value = pairs.get(config)
        met = None if value is None or target is None else value <= target
        out.append({"kind": "target", "name": name, "value": value, "target": target, "met": met})
    return out
