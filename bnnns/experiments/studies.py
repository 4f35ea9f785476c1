"""The experiments, one function each: Table 1 (:func:`ablation`), Fig. 3 (:func:`flips`),
Figs. 4-5 (:func:`sweep`) and why LNS flips what it flips (:func:`flip_sources`). Each reads
(or trains) its runs through :mod:`bnnns.experiments.runner`, aggregates them over seeds, and
writes ``<out>/<experiment>.json``, ``.md`` and ``.png`` through :mod:`~bnnns.experiments.report`
and :mod:`~bnnns.experiments.plots`."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnnns.experiments import plots, report, runner
from bnnns.experiments.protocol import SWEEPS, Protocol
from bnnns.train.metric_writer import read_metrics

__all__ = ["ablation", "flip_sources", "flips", "run_experiment", "sweep"]


def _epoch_curves(workdir: str, stage: str) -> list[dict]:
    return [r for r in read_metrics(workdir) if r["stage"] == stage]


def _runs(
    protocol: Protocol, root: str, name: str, seeds: int, one_program: bool = False
) -> dict[Any, list[dict]]:
    """Each row of experiment ``name`` -> its runs, seed by seed (``one_program``: a row's
    missing seeds train as one S-seed program, :func:`~bnnns.experiments.runner.row_programs`)."""
    return {
        label: runner.finetune_seeds(protocol, root, run, range(seeds), div, one_program)
        for label, run, div in runner.experiment_rows(protocol, name)
    }


def ablation(
    protocol: Protocol, root: str, out: str, seeds: int, one_program: bool = False
) -> dict:
    """Table 1: the baseline (pretrained) and each row, ``seeds`` seeds each; the paired
    comparisons of the protocol at the last, best and best-validation epoch."""
    _, pre_summary = runner.pretrain(protocol, root)
    ref = runner.reference(protocol, root)
    rows = _runs(protocol, root, "ablation", seeds, one_program)
    base = pre_summary["stages"][-1]
    result: dict[str, Any] = {
        "baseline": {
            "test_accuracy": base["test_accuracy"],
            "val_accuracy": base.get("val_accuracy"),
        },
        "float_reference": None
        if ref is None
        else {"test_accuracy": ref["test_accuracy"], "val_accuracy": ref.get("val_accuracy")},
        "rows": {},
        "paired": {},
    }
    for name, runs in rows.items():
        result["rows"][name] = {
            "last": report.mean_std([r["test_accuracy"] for r in runs]),
            "best": report.mean_std([r["best_test_accuracy"] for r in runs]),
            "val_last": report.mean_std([r.get("val_accuracy", float("nan")) for r in runs]),
            "per_seed_last": [r["test_accuracy"] for r in runs],
            "per_seed_best": [r["best_test_accuracy"] for r in runs],
            # model selection on the validation split: test accuracy at the best-val epoch
            "at_best_val": report.mean_std([r["test_accuracy_at_best_val"] for r in runs]),
            "per_seed_at_best_val": [r["test_accuracy_at_best_val"] for r in runs],
            "flip_rate_per_epoch": np.mean([r["flip_rate_per_epoch"] for r in runs], 0).tolist(),
            "per_seed_flip_rate_per_epoch": [r["flip_rate_per_epoch"] for r in runs],
        }
    for kind in ("last", "best", "at_best_val"):
        for a, b in protocol.paired:
            result["paired"][f"{a} - {b} ({kind})"] = report.paired_comparison(
                result["rows"][a][f"per_seed_{kind}"], result["rows"][b][f"per_seed_{kind}"]
            )
    report.write(out, "ablation", result, report.ablation_markdown(result))
    plots.plot_ablation(out, result, protocol.title)
    return result


def sweep(
    protocol: Protocol, root: str, out: str, seeds: int, name: str, one_program: bool = False
) -> dict:
    """Fig. 4 / Fig. 5: LNS accuracy against one hyper-parameter on the validation split."""
    spec = protocol.sweeps[name]
    runner.pretrain(protocol, root)
    points = []
    for value in spec.grid:
        run = runner.sweep_point(spec, value)
        runs = runner.finetune_seeds(protocol, root, run, range(seeds), False, one_program)
        points.append(
            {
                "value": value,
                "val": report.mean_std([r["val_accuracy"] for r in runs]),
                "test_last": report.mean_std([r["test_accuracy"] for r in runs]),
                "test_best": report.mean_std([r["best_test_accuracy"] for r in runs]),
                # Model selection on the validation split: the test accuracy of the epoch with
                # the best validation accuracy (the choice a user without the test set makes).
                "test_at_best_val": report.mean_std([r["test_accuracy_at_best_val"] for r in runs]),
                "flip_rate_first_epoch": float(
                    np.mean([r["flip_rate_per_epoch"][0] for r in runs])
                ),
            }
        )
        # Written after every point, so a sweep cut short still reports what it ran.
        result = {
            "param": spec.param,
            "fixed": dict(spec.fixed),
            "seeds": seeds,
            "points": points,
            "complete": len(points) == len(spec.grid),
        }
        report.write(out, name, result, report.sweep_markdown(result))
        plots.plot_sweep(out, name, result, protocol.title)
    return result


def flips(protocol: Protocol, root: str, out: str, seeds: int, one_program: bool = False) -> dict:
    """Fig. 3: per-epoch train loss (cross-entropy), test accuracy and flip rate of each row;
    epoch 0 is the pretrained model (its last pretrain epoch's train loss; its test accuracy).
    Also the label agreement per layer of the (first) LNS row and where its flips come from
    (``sign(W)`` changed, or the mapping alone)."""
    pre, _ = runner.pretrain(protocol, root)
    pre_hist = _epoch_curves(pre, protocol.pretrain.stage)
    start = {"train_ce": pre_hist[-1]["train_ce"], "test_accuracy": pre_hist[-1]["test_accuracy"]}
    lns_rows = [n for n, r in protocol.fig3.items() if r.stage == "lns"]
    curves: dict[str, Any] = {}
    agreement: dict[str, list] = {}
    for name, runs in _runs(protocol, root, "flips", seeds, one_program).items():
        stage = protocol.fig3[name].stage
        hist = [_epoch_curves(run["workdir"], stage) for run in runs]
        curves[name] = {"seeds": seeds}
        for key in ("flip_rate", "latent_flip_rate", "flip_rate_with_latent"):
            curves[name][key], curves[name][f"{key}_std"] = report.mean_std_curve(hist, key)
        for key in ("train_ce", "test_accuracy"):
            mean, std = report.mean_std_curve(hist, key)
            curves[name][key] = [start[key], *mean]
            curves[name][f"{key}_std"] = [0.0, *std]
        if stage == "lns":
            if name == lns_rows[0]:
                agreement = {
                    layer: np.mean(
                        [[r["label_agreement"][layer] for r in h] for h in hist], 0
                    ).tolist()
                    for layer in hist[0][0]["label_agreement"]
                }
            curves[name]["warm_start"] = [run.get("warm_start", {}) for run in runs]
    result = {"start": start, "curves": curves, "label_agreement": agreement}
    lns_row = lns_rows[0] if lns_rows else None
    report.write(out, "flips", result, report.flips_markdown(result, lns_row))
    plots.plot_flips(out, result, protocol.title)
    return result


def flip_sources(
    protocol: Protocol, root: str, out: str, seeds: int, one_program: bool = False
) -> dict:
    """Why does LNS flip more binary weights than fine-tuning? One row per reading (each
    changes one thing of the protocol), with the per-epoch flip rate, the part of it made by
    the mapping alone (``sign(W)`` unchanged), the flip rate of ``sign(W)``, the train loss and
    the test accuracy; a run that diverges is reported as such."""
    pre, _ = runner.pretrain(protocol, root)
    pre_ce = _epoch_curves(pre, protocol.pretrain.stage)[-1]["train_ce"]
    rows: dict[str, Any] = {}
    for name, runs in _runs(protocol, root, "flip_sources", seeds, one_program).items():
        stage = protocol.flip_sources[name].stage
        done = [r for r in runs if "diverged" not in r]
        row: dict[str, Any] = {"diverged": [r["diverged"] for r in runs if "diverged" in r]}
        if done:
            hist = [_epoch_curves(r["workdir"], stage) for r in done]
            for key in ("flip_rate", "latent_flip_rate", "flip_rate_with_latent", "train_ce"):
                row[key] = report.mean_std_curve(hist, key)[0]
            row["test_last"] = report.mean_std([r["test_accuracy"] for r in done])
            row["seeds"] = len(done)
        rows[name] = row
    result = {"pretrained_train_ce": pre_ce, "seeds": seeds, "rows": rows}
    report.write(out, "flip_sources", result, report.flip_sources_markdown(result))
    return result


def run_experiment(
    protocol: Protocol, name: str, root: str, out: str, seeds: int, one_program: bool = False
) -> dict:
    """Experiment ``name`` (``ablation``, ``flips``, ``flip_sources``, ``rho_sweep``,
    ``alpha_sweep``) of ``protocol``, its runs under ``root``, its report in ``out``
    (``one_program``: a row's missing seeds train as one S-seed program)."""
    if name in SWEEPS:
        return sweep(protocol, root, out, seeds, name, one_program)
    study = {"ablation": ablation, "flips": flips, "flip_sources": flip_sources}[name]
    return study(protocol, root, out, seeds, one_program)
