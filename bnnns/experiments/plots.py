"""The experiments' PNG plots (matplotlib, Agg): Table 1 as bars, Fig. 3 (a-c) as curves,
Figs. 4-5 as accuracy against the swept parameter beside the paper's (CIFAR-10) trend."""

from __future__ import annotations

import os

import numpy as np

from bnnns.experiments import paper

__all__ = ["plot_ablation", "plot_flips", "plot_sweep"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ablation(out: str, result: dict, title: str) -> None:
    """``out/ablation.png``: Table 1's last- and best-epoch test accuracy, one bar per row
    (mean ± std, the seeds as dots), the pretrained baseline dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    names = list(result["rows"])
    colors = ["#999", "#6a9", "#39c"]
    for ax, kind in zip(axes, ("last", "best"), strict=True):
        means = [100 * result["rows"][n][kind][0] for n in names]
        stds = [100 * result["rows"][n][kind][1] for n in names]
        ax.bar(
            names,
            means,
            yerr=stds,
            capsize=4,
            color=[colors[i % len(colors)] for i in range(len(names))],
        )
        for i, n in enumerate(names):
            seeds = result["rows"][n][f"per_seed_{kind}"]
            ax.plot([i] * len(seeds), [100 * s for s in seeds], "k.", alpha=0.6)
        ax.axhline(
            100 * result["baseline"]["test_accuracy"], color="r", ls="--", label="pretrained"
        )
        ax.set_title(f"{kind}-epoch test accuracy ({title})")
        ax.legend(loc="lower right")
    lo = min(min(r["per_seed_last"] + r["per_seed_best"]) for r in result["rows"].values())
    hi = max(max(r["per_seed_last"] + r["per_seed_best"]) for r in result["rows"].values())
    top = min(100.0, 100 * max(hi, result["baseline"]["test_accuracy"]) + 0.5)
    axes[0].set_ylim(100 * min(lo, result["baseline"]["test_accuracy"]) - 0.3, top)
    axes[0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ablation.png"), dpi=110)
    plt.close(fig)


def plot_sweep(out: str, name: str, result: dict, title: str) -> None:
    """``out/<name>.png``: Fig. 4 or 5, validation and test accuracy per grid point."""
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
    figure = paper.SWEEPS.get(result["param"], {})
    if figure:  # the paper's trend on its own (right) axis: another data set, another scale
        twin = ax.twinx()
        twin.plot(xs, [figure.get(p["value"], np.nan) for p in result["points"]], "k--", alpha=0.5)
        twin.set_ylabel("paper, CIFAR-10 (%) (dashed)")
    ax.set_xticks(xs, [str(p["value"]) for p in result["points"]], rotation=45)
    ax.set_xlabel(result["param"])
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"LNS on {title}: {name.replace('_', ' ')} ({result['seeds']} seed(s))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{name}.png"), dpi=110)
    plt.close(fig)


def plot_flips(out: str, result: dict, title: str) -> None:
    """``out/flips.png``: Fig. 3 (a) train loss, (b) test accuracy, (c) flip rate; mean ± std
    over seeds."""
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
    for ax, panel, ylabel in (
        (axes[0], "(a) train loss", "cross-entropy"),
        (axes[1], "(b) test accuracy", "accuracy (%)"),
        (axes[2], "(c) flip rate", "flip rate vs previous epoch"),
    ):
        ax.set_title(f"Fig. 3{panel[:3]} on {title}: {panel[4:]}")
        ax.set_xlabel("fine-tuning epoch (0: pretrained)")
        ax.set_ylabel(ylabel)
    axes[2].set_yscale("log")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "flips.png"), dpi=110)
    plt.close(fig)
