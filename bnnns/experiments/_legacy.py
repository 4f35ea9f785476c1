"""The paper's ablations, reproduced on real MNIST (method.md §5.1; Table 1, Figs. 3-5).

    python -m bnnns.experiments ablation      [--seeds 5]   Table 1
    python -m bnnns.experiments flips         [--seeds 5]   Fig. 3 (a-c)
    python -m bnnns.experiments rho_sweep     [--seeds 3]   Fig. 5
    python -m bnnns.experiments alpha_sweep   [--seeds 3]   Fig. 4
    python -m bnnns.experiments flip_sources  [--seeds 2]   why LNS flips what it flips
    python -m bnnns.experiments all --jobs 2                all of them, 2 runs at a time

Protocol: one pretrained BNN (``configs/mnist_ablation.py``, seed 0) is fine-tuned with the same
budget by every row; a validation split carved from the training set (10%) is the one used
for choices, the test set only reports. Every run lives in its own workdir under
``--workdir`` (default ``runs/experiments``) and is skipped when its ``summary.json`` exists,
so an interrupted experiment resumes. Tables (JSON + Markdown) and PNG plots go to ``--out``
(default ``docs/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bnnns.train.metric_writer import read_metrics

__all__ = ["main", "run_one", "paired_comparison"]

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "configs", "mnist_ablation.py")
# The paper's grids (Figs. 5 and 4); the sweeps run the subsets below (both ends, the paper's
# optimum and points between, 3 seeds), what a 2-core CPU could run in a session.
PAPER_RHO_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2)
PAPER_ALPHA_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
RHO_GRID = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
ALPHA_GRID = (0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0)
# The paper's CIFAR-10 ResNet-20 accuracy (%) at each grid point (method.md §5.1, Figs. 4-5,
# digitised to about ±0.01), printed beside ours for orientation.
_FIG5 = (85.39, 85.41, 85.38, 85.56, 85.53, 85.45, 85.41, 85.34, 85.38, 85.29, 85.07)
_FIG4 = (85.36, 85.45, 85.41, 85.42, 85.42, 85.44, 85.44, 85.53, 85.45, 85.46)
PAPER = {
    "lns.rho_pos": dict(zip(PAPER_RHO_GRID, _FIG5, strict=True)),
    "lns.alpha": dict(zip(PAPER_ALPHA_GRID, _FIG4, strict=True)),
}
ROWS = {  # Table 1 rows after the baseline: (stage, overrides)
    "fine-tune": ("finetune", {}),
    "LNS alpha=0": ("lns", {"lns.alpha": 0.0}),
    "LNS": ("lns", {}),
}


def _config(overrides: dict[str, Any]):
    from bnnns.train.default_config import load_config_file

    return load_config_file(CONFIG, overrides)


def run_one(
    workdir: str, overrides: dict[str, Any], allow_divergence: bool = False
) -> dict[str, Any]:
    """Run (or load, when already finished) one training run; return its summary.

    With ``allow_divergence`` a run stopped by a non-finite loss is a result, not an error: it
    returns (and records in ``workdir/diverged.json``) ``{"diverged": message}``.
    """
    config = _config(overrides)
    for name in ("summary.json", "diverged.json"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            _check_same_config(workdir, config)
            with open(path) as f:
                return json.load(f)
    from bnnns.train.train_lib import train_and_evaluate

    try:
        return train_and_evaluate(config, workdir)
    except FloatingPointError as e:
        if not allow_divergence:
            raise
        result = {"diverged": str(e)}
        with open(os.path.join(workdir, "diverged.json"), "w") as f:
            json.dump(result, f)
        return result


def _check_same_config(workdir: str, config) -> None:
    """A finished run is reused only when it was trained with this very config (the protocol's
    defaults may have changed since): otherwise stop, naming the differing fields."""
    with open(os.path.join(workdir, "config.json")) as f:
        stored = json.load(f)
    wanted = json.loads(json.dumps(config.to_dict(), default=str))
    flat_a, flat_b = _flatten(stored), _flatten(wanted)
    # Fields only one side has were added to bnnns in between (with a default that keeps the
    # old behaviour); every field both have must agree, except the sections of stages this run
    # does not have (a pretrain run does not depend on the lns section).
    unused = tuple(f"{s}." for s in ("pretrain", "finetune", "lns") if s not in wanted["stages"])
    differ = sorted(
        k
        for k in flat_a.keys() & flat_b.keys()
        if flat_a[k] != flat_b[k] and not k.startswith(unused)
    )
    if differ:
        raise ValueError(
            f"{workdir} holds a finished run with another config ({', '.join(differ[:6])} "
            "differ): use another --workdir, or remove that run to retrain it"
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _lookup(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def pretrain(root: str) -> tuple[str, dict]:
    workdir = os.path.join(root, "pretrain")
    return workdir, run_one(workdir, {"stages": "pretrain", "seed": 0})


def run_workdir(root: str, name: str, extra: dict, seed: int) -> tuple[str, dict]:
    """The directory of a fine-tuning run and its overrides less those equal to the protocol's
    defaults (the same run always lands in the same directory, whichever experiment asks)."""
    base = _config({})
    extra = {k: v for k, v in extra.items() if _lookup(base, k) != v}
    tag = "_".join(f"{k.split('.')[-1]}{v}".replace("/", "over") for k, v in extra.items())
    return os.path.join(root, f"{name}{'_' + tag if tag else ''}_seed{seed}"), extra


def finetune_run(
    root: str,
    pre: str,
    name: str,
    stage: str,
    seed: int,
    extra: dict,
    allow_divergence: bool = False,
) -> dict:
    workdir, extra = run_workdir(root, name, extra, seed)
    overrides = {"stages": stage, "init_from": pre, "seed": seed, **extra}
    summary = run_one(workdir, overrides, allow_divergence)
    if "diverged" in summary:
        return {"workdir": workdir, "seed": seed, **summary}
    stage_summary = summary["stages"][-1]
    return {"workdir": workdir, "seed": seed, **stage_summary}


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired (same seed) comparison of ``a - b``: mean, std, 95% CI and two-sided t-test p."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    out = {"n": int(d.size), "mean_diff": float(d.mean())}
    if d.size > 1:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, d.size - 1)) * sd / math.sqrt(d.size)
        p = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else float("nan")
        out.update(std_diff=sd, ci95=(out["mean_diff"] - half, out["mean_diff"] + half), p=p)
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _pct(mean: float, std: float, n: int = 2) -> str:
    """``mean ± std`` in percent; the mean alone for a single run (``n < 2``: no std exists)."""
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def ablation(root: str, out: str, seeds: int) -> dict:
    """Table 1 on MNIST: baseline, fine-tune, LNS alpha=0 and LNS, ``seeds`` seeds each."""
    pre, pre_summary = pretrain(root)
    rows = {
        name: [
            finetune_run(root, pre, name.replace(" ", "").replace("=", ""), stage, s, extra)
            for s in range(seeds)
        ]
        for name, (stage, extra) in ROWS.items()
    }
    base = pre_summary["stages"][-1]
    result: dict[str, Any] = {
        "baseline": {
            "test_accuracy": base["test_accuracy"],
            "val_accuracy": base.get("val_accuracy"),
        },
        "rows": {},
        "paired": {},
    }
    for name, runs in rows.items():
        result["rows"][name] = {
            "last": _mean_std([r["test_accuracy"] for r in runs]),
            "best": _mean_std([r["best_test_accuracy"] for r in runs]),
            "val_last": _mean_std([r.get("val_accuracy", float("nan")) for r in runs]),
            "per_seed_last": [r["test_accuracy"] for r in runs],
            "per_seed_best": [r["best_test_accuracy"] for r in runs],
            # model selection on the validation split: test accuracy at the best-val epoch
            "at_best_val": _mean_std([r["test_accuracy_at_best_val"] for r in runs]),
            "per_seed_at_best_val": [r["test_accuracy_at_best_val"] for r in runs],
            "flip_rate_per_epoch": np.mean([r["flip_rate_per_epoch"] for r in runs], 0).tolist(),
            "per_seed_flip_rate_per_epoch": [r["flip_rate_per_epoch"] for r in runs],
        }
    for kind in ("last", "best", "at_best_val"):
        lns = result["rows"]["LNS"][f"per_seed_{kind}"]
        for other in ("fine-tune", "LNS alpha=0"):
            result["paired"][f"LNS - {other} ({kind})"] = paired_comparison(
                lns, result["rows"][other][f"per_seed_{kind}"]
            )
    _write(out, "ablation", result, _ablation_markdown(result))
    _plot_ablation(out, result)
    return result


def _ablation_markdown(result: dict) -> str:
    lines = [
        "| method | last epoch (mean ± std) | best epoch (mean ± std) | "
        "at the best-validation epoch | paper (CIFAR-10) |",
        "|---|---|---|---|---|",
    ]
    paper = {"fine-tune": "85.26 ± 0.06", "LNS alpha=0": "85.36 ± 0.06", "LNS": "85.56 ± 0.11"}
    lines.append(
        f"| baseline (pretrained) | {100 * result['baseline']['test_accuracy']:.2f} | — | — "
        "| 85.06 |"
    )
    for name, row in result["rows"].items():
        lines.append(
            f"| {name} | {_pct(*row['last'])} | {_pct(*row['best'])} | "
            f"{_pct(*row['at_best_val'])} | {paper[name]} |"
        )
    lines += [
        "",
        "| paired comparison (same seed) | mean diff | 95% CI | p (paired t) |",
        "|---|---|---|---|",
    ]
    for name, c in result["paired"].items():
        ci = c.get("ci95", (float("nan"),) * 2)
        lines.append(
            f"| {name} | {100 * c['mean_diff']:+.3f} | [{100 * ci[0]:+.3f}, "
            f"{100 * ci[1]:+.3f}] | {c.get('p', float('nan')):.3f} |"
        )
    lines += ["", *_flip_range_markdown(result["rows"])]
    return "\n".join(lines) + "\n"


def _flip_range_markdown(rows: dict) -> list[str]:
    """Flip rate (D12) per epoch of each row: the mean over seeds and the seeds' [min, max]."""
    epochs = max(len(f) for row in rows.values() for f in row["per_seed_flip_rate_per_epoch"])
    header = " | ".join(f"epoch {e + 1}" for e in range(epochs))
    lines = [
        f"| flip rate (%), mean [min, max] over seeds | {header} |",
        "|---" * (epochs + 1) + "|",
    ]
    for name, row in rows.items():
        cells = []
        for e in range(epochs):
            v = 100 * np.array([f[e] for f in row["per_seed_flip_rate_per_epoch"] if len(f) > e])
            cells.append(f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def sweep(root: str, out: str, seeds: int, param: str, grid: Sequence[float], fixed: dict) -> dict:
    """Fig. 4 / Fig. 5: LNS accuracy against one hyper-parameter on the validation split."""
    pre, _ = pretrain(root)
    points = []
    name = "rho_sweep" if "rho" in param else "alpha_sweep"
    for value in grid:
        extra = _sweep_extra(param, fixed, value)
        stem = _variant_dir("lns", extra)
        runs = [finetune_run(root, pre, stem, "lns", s, extra) for s in range(seeds)]
        points.append(
            {
                "value": value,
                "val": _mean_std([r["val_accuracy"] for r in runs]),
                "test_last": _mean_std([r["test_accuracy"] for r in runs]),
                "test_best": _mean_std([r["best_test_accuracy"] for r in runs]),
                # Model selection on the validation split: the test accuracy of the epoch with
                # the best validation accuracy (the choice a user without the test set makes).
                "test_at_best_val": _mean_std([r["test_accuracy_at_best_val"] for r in runs]),
                "flip_rate_first_epoch": float(
                    np.mean([r["flip_rate_per_epoch"][0] for r in runs])
                ),
            }
        )
        # Written after every point, so a sweep cut short still reports what it ran.
        result = {
            "param": param,
            "fixed": fixed,
            "seeds": seeds,
            "points": points,
            "complete": len(points) == len(grid),
        }
        lines = [
            f"| {param.split('.')[-1].replace('_pos', '')} | val (last epoch) | "
            "test (last) | test (best) | test at best-val epoch | flip rate, epoch 1 | "
            "paper (CIFAR-10) |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in points:
            paper = PAPER.get(param, {}).get(p["value"])
            lines.append(
                f"| {p['value']} | {_pct(*p['val'], seeds)} | {_pct(*p['test_last'], seeds)} | "
                f"{_pct(*p['test_best'], seeds)} | {_pct(*p['test_at_best_val'], seeds)} | "
                f"{p['flip_rate_first_epoch']:.4f} | "
                f"{'—' if paper is None else f'{paper:.2f}'} |"
            )
        _write(out, name, result, "\n".join(lines) + "\n")
        _plot_sweep(out, name, result)
    return result


FIG3_ROWS = {  # Fig. 3: LNS at lr 0.01; fine-tuning at 0.01, 0.001 and 0.0001 (method.md §5.1)
    "LNS": ("lns", {}),
    "fine-tune": ("finetune", {}),
    "fine-tune lr 0.001": ("finetune", {"finetune.learning_rate": 0.001}),
    "fine-tune lr 0.0001": ("finetune", {"finetune.learning_rate": 0.0001}),
}


def _run_dir_name(name: str) -> str:
    return name.replace(" ", "").replace("=", "")


def _epoch_curves(workdir: str, stage: str) -> list[dict]:
    return [r for r in read_metrics(workdir) if r["stage"] == stage]


def _mean_std_curve(hist: list[list[dict]], key: str) -> tuple[list[float], list[float]]:
    values = np.array([[r[key] for r in h] for h in hist], float)
    std = values.std(0, ddof=1) if len(hist) > 1 else np.zeros(values.shape[1])
    return values.mean(0).tolist(), std.tolist()


def flips(root: str, out: str, seeds: int) -> dict:
    """Fig. 3 on MNIST: per-epoch train loss (cross-entropy), test accuracy and flip rate of LNS
    (lr 0.01) and fine-tuning at lr 0.01, 0.001 and 0.0001; epoch 0 is the pretrained model (its
    last pretrain epoch's train loss; its test accuracy). Also the LNS label agreement per layer
    and where LNS's flips come from (``sign(W)`` changed, or the mapping alone)."""
    pre, pre_summary = pretrain(root)
    pre_hist = _epoch_curves(pre, "pretrain")
    start = {"train_ce": pre_hist[-1]["train_ce"], "test_accuracy": pre_hist[-1]["test_accuracy"]}
    curves: dict[str, Any] = {}
    agreement: dict[str, list] = {}
    for name, (stage, extra) in FIG3_ROWS.items():
        runs = [finetune_run(root, pre, _run_dir_name(name), stage, s, extra) for s in range(seeds)]
        hist = [_epoch_curves(run["workdir"], stage) for run in runs]
        curves[name] = {"seeds": seeds}
        for key in ("flip_rate", "latent_flip_rate", "flip_rate_with_latent"):
            curves[name][key], curves[name][f"{key}_std"] = _mean_std_curve(hist, key)
        for key in ("train_ce", "test_accuracy"):
            mean, std = _mean_std_curve(hist, key)
            curves[name][key] = [start[key], *mean]
            curves[name][f"{key}_std"] = [0.0, *std]
        if stage == "lns":
            agreement = {
                layer: np.mean([[r["label_agreement"][layer] for r in h] for h in hist], 0).tolist()
                for layer in hist[0][0]["label_agreement"]
            }
            curves[name]["warm_start"] = [run.get("warm_start", {}) for run in runs]
    result = {"start": start, "curves": curves, "label_agreement": agreement}
    names = list(curves)
    lines = [
        "| epoch | " + " | ".join(f"flip rate {n}" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for e in range(len(curves["LNS"]["flip_rate"])):
        lines.append(
            f"| {e + 1} | " + " | ".join(f"{curves[n]['flip_rate'][e]:.5f}" for n in names) + " |"
        )
    for key, label, fmt in (
        ("train_ce", "train loss (cross-entropy)", "{:.4f}"),
        ("test_accuracy", "test accuracy (%)", "{:.2f}"),
    ):
        lines += [
            "",
            f"| epoch | {label}: " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        scale = 100 if key == "test_accuracy" else 1
        for e in range(len(curves["LNS"][key])):
            cells = [
                " ± ".join(fmt.format(scale * curves[n][k][e]) for k in (key, key + "_std"))
                for n in names
            ]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lns = curves["LNS"]
    lines += [
        "",
        "| epoch | LNS flips with sign(W) changed | LNS flips by the mapping alone | "
        "LNS sign(W) flip rate |",
        "|---|---|---|---|",
    ]
    for e in range(len(lns["flip_rate"])):
        both = lns["flip_rate_with_latent"][e]
        lines.append(
            f"| {e + 1} | {both:.5f} | {lns['flip_rate'][e] - both:.5f} | "
            f"{lns['latent_flip_rate'][e]:.5f} |"
        )
    lines += ["", "| layer | label agreement per epoch (LNS) |", "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{a:.4f}' for a in v)} |" for k, v in agreement.items()]
    _write(out, "flips", result, "\n".join(lines) + "\n")
    _plot_flips(out, result)
    return result


FLIP_SOURCES = {  # the issue-9 investigation: what makes LNS flip more than fine-tuning?
    "fine-tune (reference)": ("finetune", {}),
    "LNS (protocol default: clipped STE, D2)": ("lns", {}),
    "LNS alpha=0": ("lns", {"lns.alpha": 0.0}),
    "identity weight STE (the old D2)": ("lns", {"lns.weight_ste": "identity"}),
    "sum reduction (Eq. 17)": ("lns", {"lns.reduction": "sum"}),
    "theta lr x 1/N": ("lns", {"lns.mapping_lr_scale": "1/N"}),
    "theta lr 0 (mapping frozen)": ("lns", {"lns.mapping_lr_scale": "0"}),
    "sum + theta lr x 1/N": ("lns", {"lns.reduction": "sum", "lns.mapping_lr_scale": "1/N"}),
    "warm start to 99.5% agreement only": ("lns", {"lns.warmup_tolerance": 0.0}),
    "labels: pretrained sign(W) (D1)": ("lns", {"lns.labels": "pretrained"}),
    "l_cls straight to W (D14)": ("lns", {"lns.cls_grad_to_w": "straight"}),
}


def _variant_dir(stage: str, extra: dict) -> str:
    """The run-directory stem Table 1 uses for the same settings (so runs are shared)."""
    if stage == "finetune":
        return "fine-tune"
    return "LNSalpha0" if extra.get("lns.alpha") == 0.0 else "LNS"


def flip_sources(root: str, out: str, seeds: int) -> dict:
    """Why does LNS flip more binary weights than fine-tuning? One row per reading (each
    changes one thing of the protocol), with the per-epoch flip rate, the part of it made by
    the mapping alone (``sign(W)`` unchanged), the flip rate of ``sign(W)``, the train loss and
    the test accuracy; a run that diverges is reported as such."""
    pre, _ = pretrain(root)
    pre_ce = _epoch_curves(pre, "pretrain")[-1]["train_ce"]
    rows: dict[str, Any] = {}
    for name, (stage, extra) in FLIP_SOURCES.items():
        runs = [
            finetune_run(root, pre, _variant_dir(stage, extra), stage, s, extra, True)
            for s in range(seeds)
        ]
        done = [r for r in runs if "diverged" not in r]
        row: dict[str, Any] = {"diverged": [r["diverged"] for r in runs if "diverged" in r]}
        if done:
            hist = [_epoch_curves(r["workdir"], stage) for r in done]
            for key in ("flip_rate", "latent_flip_rate", "flip_rate_with_latent", "train_ce"):
                row[key] = _mean_std_curve(hist, key)[0]
            row["test_last"] = _mean_std([r["test_accuracy"] for r in done])
            row["seeds"] = len(done)
        rows[name] = row
    result = {"pretrained_train_ce": pre_ce, "seeds": seeds, "rows": rows}
    lines = [
        f"Pretrained model: train loss {pre_ce:.4f}. Flip rates per epoch (1, 2, ...; vs the "
        "previous epoch); 'mapping alone': binary flips with sign(W) unchanged.",
        "",
        "| reading | flip rate | of which mapping alone | sign(W) flip rate | "
        "train loss (epoch 1, last) | test acc last (%) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "flip_rate" not in row:
            first = row["diverged"][0].split(" (")[0].split("; ")[0]  # its first clause
            lines.append(f"| {name} | diverged: {first} | | | | |")
            continue
        mapping_alone = np.subtract(row["flip_rate"], row["flip_rate_with_latent"])
        fmt = lambda xs: ", ".join(f"{x:.4f}" for x in xs)  # noqa: E731
        note = f" ({len(row['diverged'])} of {seeds} diverged)" if row["diverged"] else ""
        lines.append(
            f"| {name}{note} | {fmt(row['flip_rate'])} | {fmt(mapping_alone)} | "
            f"{fmt(row['latent_flip_rate'])} | {row['train_ce'][0]:.4f}, {row['train_ce'][-1]:.4f}"
            f" | {_pct(*row['test_last'], row['seeds'])} |"
        )
    _write(out, "flip_sources", result, "\n".join(lines) + "\n")
    return result


def _write(out: str, name: str, result: dict, markdown: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(markdown)
    print(markdown)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_ablation(out: str, result: dict) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    names = list(result["rows"])
    for ax, kind in zip(axes, ("last", "best"), strict=True):
        means = [100 * result["rows"][n][kind][0] for n in names]
        stds = [100 * result["rows"][n][kind][1] for n in names]
        ax.bar(names, means, yerr=stds, capsize=4, color=["#999", "#6a9", "#39c"])
        for i, n in enumerate(names):
            seeds = result["rows"][n][f"per_seed_{kind}"]
            ax.plot([i] * len(seeds), [100 * s for s in seeds], "k.", alpha=0.6)
        ax.axhline(
            100 * result["baseline"]["test_accuracy"], color="r", ls="--", label="pretrained"
        )
        ax.set_title(f"{kind}-epoch test accuracy (MNIST)")
        ax.legend(loc="lower right")
    lo = min(min(r["per_seed_last"] + r["per_seed_best"]) for r in result["rows"].values())
    hi = max(max(r["per_seed_last"] + r["per_seed_best"]) for r in result["rows"].values())
    top = min(100.0, 100 * max(hi, result["baseline"]["test_accuracy"]) + 0.5)
    axes[0].set_ylim(100 * min(lo, result["baseline"]["test_accuracy"]) - 0.3, top)
    axes[0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ablation.png"), dpi=110)
    plt.close(fig)


def _plot_sweep(out: str, name: str, result: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = np.arange(len(result["points"]))
    for key, label in (
        ("val", "validation (last epoch)"),
        ("test_last", "test (last epoch)"),
        ("test_at_best_val", "test (best-validation epoch)"),
    ):
        m = [100 * p[key][0] for p in result["points"]]
        s = [100 * p[key][1] for p in result["points"]]
        ax.errorbar(xs, m, yerr=s, marker="o", capsize=3, label=label)
    paper = PAPER.get(result["param"], {})
    if paper:  # the paper's trend on its own (right) axis: another data set, another scale
        twin = ax.twinx()
        twin.plot(xs, [paper.get(p["value"], np.nan) for p in result["points"]], "k--", alpha=0.5)
        twin.set_ylabel("paper, CIFAR-10 (%) (dashed)")
    ax.set_xticks(xs, [str(p["value"]) for p in result["points"]], rotation=45)
    ax.set_xlabel(result["param"])
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"LNS on MNIST: {name.replace('_', ' ')} ({result['seeds']} seed(s))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{name}.png"), dpi=110)
    plt.close(fig)


def _plot_flips(out: str, result: dict) -> None:
    """Fig. 3 (a) train loss, (b) test accuracy, (c) flip rate; mean ± std over seeds."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, c in result["curves"].items():
        for ax, key, scale, first in (
            (axes[0], "train_ce", 1, 0),
            (axes[1], "test_accuracy", 100, 0),
            (axes[2], "flip_rate", 1, 1),
        ):
            m, s = scale * np.asarray(c[key]), scale * np.asarray(c[key + "_std"])
            epochs = np.arange(first, first + len(m))
            (line,) = ax.plot(epochs, m, marker="o", label=name)
            ax.fill_between(epochs, m - s, m + s, color=line.get_color(), alpha=0.2)
    for ax, title, ylabel in (
        (axes[0], "(a) train loss", "cross-entropy"),
        (axes[1], "(b) test accuracy", "accuracy (%)"),
        (axes[2], "(c) flip rate", "flip rate vs previous epoch"),
    ):
        ax.set_title(f"Fig. 3{title[:3]} on MNIST: {title[4:]}")
        ax.set_xlabel("fine-tuning epoch (0: pretrained)")
        ax.set_ylabel(ylabel)
    axes[2].set_yscale("log")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "flips.png"), dpi=110)
    plt.close(fig)


SWEEPS = ("rho_sweep", "alpha_sweep")


def sweep_spec(name: str) -> tuple[str, Sequence[float], dict]:
    """``(parameter, grid, fixed overrides)`` of a sweep: Fig. 5 (rho at alpha 1) or Fig. 4
    (alpha at rho 0.005, the headline rho; the paper swept alpha at rho 0.01, method.md §4:
    at 0.005 the sweep's alpha = 1 point is Table 1's LNS row)."""
    if name == "rho_sweep":
        return "lns.rho_pos", RHO_GRID, {"lns.alpha": 1.0}
    return "lns.alpha", ALPHA_GRID, {"lns.rho_pos": 0.005, "lns.rho_neg": 0.005}


DEFAULT_SEEDS = {"ablation": 5, "flip_sources": 1, "flips": 3, "rho_sweep": 3, "alpha_sweep": 3}


def _sweep_extra(param: str, fixed: dict, value: float) -> dict:
    extra = {**fixed, param: value}
    if param == "lns.rho_pos":
        extra["lns.rho_neg"] = value
    return extra


def planned_runs(name: str, seeds: int) -> list[tuple[str, str, dict, int, bool]]:
    """The fine-tuning runs experiment ``name`` reads: ``(dir stem, stage, overrides, seed,
    allow_divergence)``, in the order the experiment runs them."""
    if name == "ablation":
        rows = [(_run_dir_name(n), st, ex, False) for n, (st, ex) in ROWS.items()]
    elif name == "flips":
        rows = [(_run_dir_name(n), st, ex, False) for n, (st, ex) in FIG3_ROWS.items()]
    elif name == "flip_sources":
        rows = [(_variant_dir(st, ex), st, ex, True) for st, ex in FLIP_SOURCES.values()]
    else:
        param, grid, fixed = sweep_spec(name)
        extras = [_sweep_extra(param, fixed, v) for v in grid]
        rows = [(_variant_dir("lns", ex), "lns", ex, False) for ex in extras]
    return [(stem, st, ex, s, div) for stem, st, ex, div in rows for s in range(seeds)]


def _run_planned(job: tuple) -> str:
    root, pre, stem, stage, extra, seed, allow_divergence = job
    run = finetune_run(root, pre, stem, stage, seed, extra, allow_divergence)
    return run["workdir"]


def run_in_parallel(root: str, names: Sequence[str], seeds: dict, jobs: int) -> None:
    """Train the missing runs of experiments ``names``, ``jobs`` processes at a time (each run
    is one process of its own, as if trained alone; a run two experiments share runs once)."""
    import multiprocessing

    pre, _ = pretrain(root)
    todo, seen = [], set()
    for name in names:
        for stem, stage, extra, seed, div in planned_runs(name, seeds[name]):
            workdir, _ = run_workdir(root, stem, extra, seed)
            if workdir not in seen:
                seen.add(workdir)
                todo.append((root, pre, stem, stage, extra, seed, div))
    context = multiprocessing.get_context("spawn")  # no fork of a process that imported jax
    with context.Pool(jobs, maxtasksperchild=1) as pool:
        for workdir in pool.imap_unordered(_run_planned, todo):
            print(f"finished {workdir}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=(*DEFAULT_SEEDS, "all"))
    parser.add_argument("--seeds", type=int, default=None, help=f"default: {DEFAULT_SEEDS}")
    parser.add_argument("--workdir", default="runs/experiments")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument(
        "--jobs", type=int, default=1, help="train missing runs this many at a time first"
    )
    args = parser.parse_args(argv)
    names = list(DEFAULT_SEEDS) if args.name == "all" else [args.name]
    seeds = {n: args.seeds or DEFAULT_SEEDS[n] for n in names}
    if args.jobs > 1:
        run_in_parallel(args.workdir, names, seeds, args.jobs)
    for name in names:
        if name == "ablation":
            ablation(args.workdir, args.out, seeds[name])
        elif name in SWEEPS:
            param, grid, fixed = sweep_spec(name)
            sweep(args.workdir, args.out, seeds[name], param, grid, fixed)
        elif name == "flip_sources":
            flip_sources(args.workdir, args.out, seeds[name])
        else:
            flips(args.workdir, args.out, seeds[name])


if __name__ == "__main__":
    main()
