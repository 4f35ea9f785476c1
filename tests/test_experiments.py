"""The experiment runner (``python -m bnnns.experiments``) on a seconds-sized MNIST protocol."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnnns import experiments


def test_paired_comparison_matches_hand_computed_t_test():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) with 2 degrees of freedom.
    c = experiments.paired_comparison([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert c["n"] == 3 and c["mean_diff"] == pytest.approx(2.0)
    assert c["std_diff"] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert c["ci95"] == pytest.approx((2.0 - half, 2.0 + half))
    assert c["p"] == pytest.approx(0.07417990022744847)


@given(
    st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=2, max_size=8).filter(
        lambda pairs: np.std([a - b for a, b in pairs]) > 1e-6
    )
)
def test_paired_comparison_ci_brackets_the_mean_and_flips_with_the_order(pairs):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ab, ba = experiments.paired_comparison(a, b), experiments.paired_comparison(b, a)
    assert ab["ci95"][0] <= ab["mean_diff"] <= ab["ci95"][1]
    assert ab["mean_diff"] == pytest.approx(-ba["mean_diff"])
    assert ab["p"] == pytest.approx(ba["p"]) and 0.0 <= ab["p"] <= 1.0


def test_single_run_is_reported_without_a_std():
    assert experiments._pct(0.9712, 0.0, 1) == "97.12"
    assert experiments._pct(0.9712, 0.0034, 3) == "97.12 ± 0.34"


def tiny_protocol(overrides):
    """configs/mnist_ablation.py at seconds size: width 4, 512 images, 2 fine-tuning epochs."""
    from bnnns.train.default_config import load_config_file

    tiny = {
        "model.width": 4,
        "train_subset": 512,
        "batch_size": 64,
        "pretrain.epochs": 1,
        "finetune.epochs": 2,
        "finetune.decay_epochs": (1,),
        "lns.epochs": 2,
        "lns.decay_epochs": (1,),
        "lns.warmup_steps": 200,
    }
    return load_config_file(experiments.CONFIG, {**tiny, **overrides})


def finished(root, run: str, seed: int) -> dict:
    """The ``summary.json`` of the experiment run ``<run>_seed<seed>`` under ``root``."""
    return json.loads((root / f"{run}_seed{seed}" / "summary.json").read_text())


@pytest.mark.slow
def test_ablation_then_flips_and_sweep_reuse_finished_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "_config", tiny_protocol)
    root, out = str(tmp_path / "runs"), tmp_path / "results"
    experiments.main(["ablation", "--seeds", "2", "--workdir", root, "--out", str(out)])

    ablation = json.loads((out / "ablation.json").read_text())
    assert set(ablation["rows"]) == {"fine-tune", "LNS alpha=0", "LNS"}
    for name, row in ablation["rows"].items():
        run = "LNSalpha0_alpha0.0" if name == "LNS alpha=0" else name
        tests = [finished(tmp_path / "runs", run, s)["test_accuracy"] for s in range(2)]
        assert row["per_seed_last"] == tests  # the table is what the runs printed
        assert row["last"][0] == pytest.approx(np.mean(tests))
        assert len(row["flip_rate_per_epoch"]) == 2
    lns, ft = ablation["rows"]["LNS"], ablation["rows"]["fine-tune"]
    assert ablation["paired"]["LNS - fine-tune (last)"]["mean_diff"] == pytest.approx(
        np.mean(lns["per_seed_last"]) - np.mean(ft["per_seed_last"])
    )
    assert "| LNS |" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").stat().st_size > 0

    # Fig. 3 adds fine-tuning at lr 0.001 and 0.0001 to the ablation's runs.
    experiments.main(["flips", "--seeds", "2", "--workdir", root, "--out", str(out)])

    # From here on every run must come from a summary.json already on disk.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("bnnns.train.train_lib.train_and_evaluate", no_training)
    experiments.main(["flips", "--seeds", "2", "--workdir", root, "--out", str(out)])
    flips = json.loads((out / "flips.json").read_text())
    assert set(flips["curves"]) == set(experiments.FIG3_ROWS)
    assert len(flips["curves"]["LNS"]["flip_rate"]) == 2
    assert len(flips["curves"]["LNS"]["train_ce"]) == 3  # epoch 0: the pretrained model
    assert set(flips["label_agreement"]) == {"BinaryConv_0", "BinaryConv_1", "BinaryConv_2"}
    assert (out / "flips.png").stat().st_size > 0

    # A sweep point equal to the protocol's default (rho = 0.005) is the ablation's LNS run; a
    # new point must train, so the cut-short sweep reports the finished point only.
    monkeypatch.setattr(experiments, "RHO_GRID", (0.005, 0.05))
    with pytest.raises(AssertionError, match="trained again"):
        experiments.main(["rho_sweep", "--seeds", "2", "--workdir", root, "--out", str(out)])
    sweep = json.loads((out / "rho_sweep.json").read_text())
    assert not sweep["complete"] and [p["value"] for p in sweep["points"]] == [0.005]
    assert sweep["points"][0]["test_last"][0] == pytest.approx(lns["last"][0])
    lns_runs = [finished(tmp_path / "runs", "LNS", s)["stages"][-1] for s in range(2)]
    assert sweep["points"][0]["test_at_best_val"][0] == pytest.approx(
        np.mean([r["test_accuracy_at_best_val"] for r in lns_runs])
    )
    assert "| 0.005 |" in (out / "rho_sweep.md").read_text().splitlines()[2]
    assert (out / "rho_sweep.md").read_text().splitlines()[2].endswith("| 85.56 |")


def test_paper_figures_cover_the_grids():
    assert set(experiments.PAPER["lns.rho_pos"]) >= set(experiments.RHO_GRID)
    assert set(experiments.PAPER["lns.alpha"]) >= set(experiments.ALPHA_GRID)
    assert set(experiments.PAPER["lns.rho_pos"]) == set(experiments.PAPER_RHO_GRID)
