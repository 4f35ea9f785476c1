"""How the experiments report: paired statistics, mean ± std, the Markdown tables of Table 1,
Figs. 3-5 and the flip sources, and the JSON + Markdown files they are written to (the plots
are :mod:`bnnns.experiments.plots`). The paper's own numbers (CIFAR-10) sit beside ours."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bnnns.experiments import paper

__all__ = [
    "ablation_markdown",
    "flip_sources_markdown",
    "flips_markdown",
    "mean_std",
    "mean_std_curve",
    "paired_comparison",
    "pct",
    "sweep_markdown",
    "write",
]


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired (same seed) comparison of ``a - b``: mean, std, 95% CI and two-sided t-test p."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    out: dict[str, Any] = {"n": int(d.size), "mean_diff": float(d.mean())}
    if d.size > 1:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, d.size - 1)) * sd / math.sqrt(d.size)
        p = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else float("nan")
        out.update(std_diff=sd, ci95=(out["mean_diff"] - half, out["mean_diff"] + half), p=p)
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value)."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def mean_std_curve(hist: list[list[dict]], key: str) -> tuple[list[float], list[float]]:
    """Per-epoch mean and std over seeds of ``key`` (``hist``: one list of epochs per seed)."""
    values = np.array([[r[key] for r in h] for h in hist], float)
    std = values.std(0, ddof=1) if len(hist) > 1 else np.zeros(values.shape[1])
    return values.mean(0).tolist(), std.tolist()


def pct(mean: float, std: float, n: int = 2) -> str:
    """``mean ± std`` in percent; the mean alone for a single run (``n < 2``: no std exists)."""
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def write(out: str, name: str, result: dict, markdown: str) -> None:
    """``out/<name>.json`` and ``out/<name>.md``; the Markdown is printed too."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(markdown)
    print(markdown)


def ablation_markdown(result: dict) -> str:
    """Table 1: each row's last, best and at-best-validation test accuracy, the paired
    comparisons, and the flip rate per epoch."""
    lines = [
        "| method | last epoch (mean ± std) | best epoch (mean ± std) | "
        "at the best-validation epoch | paper (CIFAR-10) |",
        "|---|---|---|---|---|",
    ]
    lines.append(
        f"| baseline (pretrained) | {100 * result['baseline']['test_accuracy']:.2f} | — | — "
        f"| {paper.TABLE1['baseline']} |"
    )
    ref = result.get("float_reference")
    if ref is not None:
        lines.insert(
            2,
            f"| float reference (same model, real weights, ReLU) | "
            f"{100 * ref['test_accuracy']:.2f} | — | — | — |",
        )
    for name, row in result["rows"].items():
        lines.append(
            f"| {name} | {pct(*row['last'])} | {pct(*row['best'])} | "
            f"{pct(*row['at_best_val'])} | {paper.TABLE1.get(name, '—')} |"
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


def sweep_markdown(result: dict) -> str:
    """Figs. 4-5: validation and test accuracy and the first epoch's flip rate per grid point."""
    param, seeds = result["param"], result["seeds"]
    figure = paper.SWEEPS.get(param, {})
    lines = [
        f"| {param.split('.')[-1].replace('_pos', '')} | val (last epoch) | "
        "test (last) | test (best) | test at best-val epoch | flip rate, epoch 1 | "
        "paper (CIFAR-10) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in result["points"]:
        ours = figure.get(p["value"])
        lines.append(
            f"| {p['value']} | {pct(*p['val'], seeds)} | {pct(*p['test_last'], seeds)} | "
            f"{pct(*p['test_best'], seeds)} | {pct(*p['test_at_best_val'], seeds)} | "
            f"{p['flip_rate_first_epoch']:.4f} | "
            f"{'—' if ours is None else f'{ours:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def flips_markdown(result: dict, lns_row: str | None) -> str:
    """Fig. 3: flip rate, train loss and test accuracy per epoch of each row; where the flips of
    the LNS row ``lns_row`` come from; its label agreement per layer."""
    curves, agreement = result["curves"], result["label_agreement"]
    names = list(curves)
    first = curves[names[0]]
    lines = [
        "| epoch | " + " | ".join(f"flip rate {n}" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for e in range(len(first["flip_rate"])):
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
        for e in range(len(first[key])):
            cells = [
                " ± ".join(fmt.format(scale * curves[n][k][e]) for k in (key, key + "_std"))
                for n in names
            ]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
    if lns_row is not None:
        lns = curves[lns_row]
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
    return "\n".join(lines) + "\n"


def flip_sources_markdown(result: dict) -> str:
    """Why LNS flips what it flips: per reading, the flip rate per epoch, the part of it made by
    the mapping alone, the flip rate of ``sign(W)``, the train loss and the test accuracy."""
    pre_ce, seeds = result["pretrained_train_ce"], result["seeds"]
    lines = [
        f"Pretrained model: train loss {pre_ce:.4f}. Flip rates per epoch (1, 2, ...; vs the "
        "previous epoch); 'mapping alone': binary flips with sign(W) unchanged.",
        "",
        "| reading | flip rate | of which mapping alone | sign(W) flip rate | "
        "train loss (epoch 1, last) | test acc last (%) |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(xs: Sequence[float]) -> str:
        return ", ".join(f"{x:.4f}" for x in xs)

    for name, row in result["rows"].items():
        if "flip_rate" not in row:
            first = row["diverged"][0].split(" (")[0].split("; ")[0]  # its first clause
            lines.append(f"| {name} | diverged: {first} | | | | |")
            continue
        mapping_alone = np.subtract(row["flip_rate"], row["flip_rate_with_latent"])
        note = f" ({len(row['diverged'])} of {seeds} diverged)" if row["diverged"] else ""
        lines.append(
            f"| {name}{note} | {fmt(row['flip_rate'])} | {fmt(mapping_alone)} | "
            f"{fmt(row['latent_flip_rate'])} | {row['train_ce'][0]:.4f}, {row['train_ce'][-1]:.4f}"
            f" | {pct(*row['test_last'], row['seeds'])} |"
        )
    return "\n".join(lines) + "\n"
