"""The experiment runner (``python -m bnnns.experiments``) on a seconds-sized MNIST protocol."""

import ast
import dataclasses
import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnnns.experiments import cli, paper, protocol, report, runner
from bnnns.experiments.protocols.mnist import MNIST
from bnnns.train.metric_writer import read_metrics


def test_paired_comparison_matches_hand_computed_t_test():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) with 2 degrees of freedom.
    c = report.paired_comparison([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
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
    ab, ba = report.paired_comparison(a, b), report.paired_comparison(b, a)
    assert ab["ci95"][0] <= ab["mean_diff"] <= ab["ci95"][1]
    assert ab["mean_diff"] == pytest.approx(-ba["mean_diff"])
    assert ab["p"] == pytest.approx(ba["p"]) and 0.0 <= ab["p"] <= 1.0


def test_single_run_is_reported_without_a_std():
    assert report.pct(0.9712, 0.0, 1) == "97.12"
    assert report.pct(0.9712, 0.0034, 3) == "97.12 ± 0.34"


# configs/mnist_ablation.py at seconds size: width 4, 512 images, 2 fine-tuning epochs,
# evaluated on 2,000 test and validation images.
TINY_BUDGET = {
    "model.width": 4,
    "train_subset": 512,
    "eval_subset": 2000,
    "batch_size": 64,
    "pretrain.epochs": 1,
    "finetune.epochs": 2,
    "finetune.decay_epochs": (1,),
    "lns.epochs": 2,
    "lns.decay_epochs": (1,),
    "lns.warmup_steps": 200,
}


def register_tiny(monkeypatch, name: str, **changes) -> protocol.Protocol:
    """The MNIST protocol at the tiny budget, registered as ``name`` for this test only."""
    tiny = dataclasses.replace(MNIST, name=name, budget=TINY_BUDGET, **changes)
    protocol.protocol_names()  # the built-in protocols first
    monkeypatch.setitem(protocol.PROTOCOLS, name, tiny)
    return tiny


def finished(root, run: str, seed: int) -> dict:
    """The ``summary.json`` of the experiment run ``<run>_seed<seed>`` under ``root``."""
    return json.loads((root / f"{run}_seed{seed}" / "summary.json").read_text())


@pytest.mark.slow
def test_ablation_then_flips_and_sweep_reuse_finished_runs(tmp_path, monkeypatch):
    tiny = register_tiny(monkeypatch, "mnist-tiny")
    root, out = str(tmp_path / "runs"), tmp_path / "results"
    flags = ["--seeds", "2", "--workdir", root, "--out", str(out), "--protocol", tiny.name]
    cli.main(["ablation", *flags])

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
    cli.main(["flips", *flags])

    # From here on every run must come from a summary.json already on disk.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("bnnns.train.train_lib.train_and_evaluate", no_training)
    cli.main(["flips", *flags])
    flips = json.loads((out / "flips.json").read_text())
    assert set(flips["curves"]) == set(tiny.fig3)
    assert len(flips["curves"]["LNS"]["flip_rate"]) == 2
    assert len(flips["curves"]["LNS"]["train_ce"]) == 3  # epoch 0: the pretrained model
    assert set(flips["label_agreement"]) == {"BinaryConv_0", "BinaryConv_1", "BinaryConv_2"}
    assert (out / "flips.png").stat().st_size > 0

    # A sweep point equal to the protocol's default (rho = 0.005) is the ablation's LNS run; a
    # new point must train, so the cut-short sweep reports the finished point only.
    rho = dataclasses.replace(tiny.sweeps["rho_sweep"], grid=(0.005, 0.05))
    short = register_tiny(monkeypatch, "mnist-tiny-rho", sweeps={**tiny.sweeps, "rho_sweep": rho})
    with pytest.raises(AssertionError, match="trained again"):
        cli.main(["rho_sweep", *flags[:-1], short.name])
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
    assert set(paper.SWEEPS["lns.rho_pos"]) >= set(MNIST.sweeps["rho_sweep"].grid)
    assert set(paper.SWEEPS["lns.alpha"]) >= set(MNIST.sweeps["alpha_sweep"].grid)
    assert set(paper.SWEEPS["lns.rho_pos"]) == set(paper.RHO_GRID)


def test_mnist_protocol_plans_the_runs_the_old_code_planned():
    """Same workdirs, overrides and seeds as before the regrouping: runs already computed in an
    EXP_DIR are found again, and a rerun resumes instead of retraining."""
    assert protocol.get_protocol("mnist") is MNIST
    assert dict(MNIST.seeds) == {n: len({s for _, _, s, _ in r}) for n, r in OLD_PLAN.items()}
    assert list(MNIST.seeds) == list(OLD_PLAN)  # the order ``all`` runs them in
    assert runner.pretrain_spec(MNIST, "") == ("pretrain", {"stages": "pretrain", "seed": 0})
    for name, expected in OLD_PLAN.items():
        planned = runner.planned_runs(MNIST, name, MNIST.seeds[name])
        assert [
            (*runner.finetune_spec(MNIST, "", p.run, p.seed), p.allow_divergence) for p in planned
        ] == [
            (
                wd,
                {"stages": stage, "init_from": "pretrain", "seed": s, **extra},
                name == "flip_sources",
            )
            for wd, stage, s, extra in expected
        ], name


def test_unknown_protocol_exits_naming_the_protocols(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ablation", "--protocol", "cifar7"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown protocol 'cifar7'" in err and "mnist" in err
    with pytest.raises(ValueError, match="the protocols are: .*mnist"):
        protocol.get_protocol("cifar7")


def test_nothing_outside_experiments_imports_it():
    package = pathlib.Path(protocol.__file__).parents[1]
    for path in package.rglob("*.py"):
        if "experiments" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            assert not any(n.startswith("bnnns.experiments") for n in names), path


# What bnnns/experiments/_legacy.py (f57b27d) planned: (workdir under the root, stage, seed,
# overrides besides stages/init_from/seed) per experiment at its default seeds; the
# pretrained BNN in <root>/pretrain (stages=pretrain, seed 0); flip_sources alone lets runs diverge.
OLD_PLAN = {
    "ablation": [
        ("fine-tune_seed0", "finetune", 0, {}),
        ("fine-tune_seed1", "finetune", 1, {}),
        ("fine-tune_seed2", "finetune", 2, {}),
        ("fine-tune_seed3", "finetune", 3, {}),
        ("fine-tune_seed4", "finetune", 4, {}),
        ("LNSalpha0_alpha0.0_seed0", "lns", 0, {"lns.alpha": 0.0}),
        ("LNSalpha0_alpha0.0_seed1", "lns", 1, {"lns.alpha": 0.0}),
        ("LNSalpha0_alpha0.0_seed2", "lns", 2, {"lns.alpha": 0.0}),
        ("LNSalpha0_alpha0.0_seed3", "lns", 3, {"lns.alpha": 0.0}),
        ("LNSalpha0_alpha0.0_seed4", "lns", 4, {"lns.alpha": 0.0}),
        ("LNS_seed0", "lns", 0, {}),
        ("LNS_seed1", "lns", 1, {}),
        ("LNS_seed2", "lns", 2, {}),
        ("LNS_seed3", "lns", 3, {}),
        ("LNS_seed4", "lns", 4, {}),
    ],
    "flip_sources": [
        ("fine-tune_seed0", "finetune", 0, {}),
        ("LNS_seed0", "lns", 0, {}),
        ("LNSalpha0_alpha0.0_seed0", "lns", 0, {"lns.alpha": 0.0}),
        ("LNS_weight_steidentity_seed0", "lns", 0, {"lns.weight_ste": "identity"}),
        ("LNS_reductionsum_seed0", "lns", 0, {"lns.reduction": "sum"}),
        ("LNS_mapping_lr_scale1overN_seed0", "lns", 0, {"lns.mapping_lr_scale": "1/N"}),
        ("LNS_mapping_lr_scale0_seed0", "lns", 0, {"lns.mapping_lr_scale": "0"}),
        (
            "LNS_reductionsum_mapping_lr_scale1overN_seed0",
            "lns",
            0,
            {"lns.reduction": "sum", "lns.mapping_lr_scale": "1/N"},
        ),
        ("LNS_warmup_tolerance0.0_seed0", "lns", 0, {"lns.warmup_tolerance": 0.0}),
        ("LNS_labelspretrained_seed0", "lns", 0, {"lns.labels": "pretrained"}),
        ("LNS_cls_grad_to_wstraight_seed0", "lns", 0, {"lns.cls_grad_to_w": "straight"}),
    ],
    "flips": [
        ("LNS_seed0", "lns", 0, {}),
        ("LNS_seed1", "lns", 1, {}),
        ("LNS_seed2", "lns", 2, {}),
        ("fine-tune_seed0", "finetune", 0, {}),
        ("fine-tune_seed1", "finetune", 1, {}),
        ("fine-tune_seed2", "finetune", 2, {}),
        (
            "fine-tunelr0.001_learning_rate0.001_seed0",
            "finetune",
            0,
            {"finetune.learning_rate": 0.001},
        ),
        (
            "fine-tunelr0.001_learning_rate0.001_seed1",
            "finetune",
            1,
            {"finetune.learning_rate": 0.001},
        ),
        (
            "fine-tunelr0.001_learning_rate0.001_seed2",
            "finetune",
            2,
            {"finetune.learning_rate": 0.001},
        ),
        (
            "fine-tunelr0.0001_learning_rate0.0001_seed0",
            "finetune",
            0,
            {"finetune.learning_rate": 0.0001},
        ),
        (
            "fine-tunelr0.0001_learning_rate0.0001_seed1",
            "finetune",
            1,
            {"finetune.learning_rate": 0.0001},
        ),
        (
            "fine-tunelr0.0001_learning_rate0.0001_seed2",
            "finetune",
            2,
            {"finetune.learning_rate": 0.0001},
        ),
    ],
    "rho_sweep": [
        ("LNS_rho_pos0.0_rho_neg0.0_seed0", "lns", 0, {"lns.rho_pos": 0.0, "lns.rho_neg": 0.0}),
        ("LNS_rho_pos0.0_rho_neg0.0_seed1", "lns", 1, {"lns.rho_pos": 0.0, "lns.rho_neg": 0.0}),
        ("LNS_rho_pos0.0_rho_neg0.0_seed2", "lns", 2, {"lns.rho_pos": 0.0, "lns.rho_neg": 0.0}),
        (
            "LNS_rho_pos0.001_rho_neg0.001_seed0",
            "lns",
            0,
            {"lns.rho_pos": 0.001, "lns.rho_neg": 0.001},
        ),
        (
            "LNS_rho_pos0.001_rho_neg0.001_seed1",
            "lns",
            1,
            {"lns.rho_pos": 0.001, "lns.rho_neg": 0.001},
        ),
        (
            "LNS_rho_pos0.001_rho_neg0.001_seed2",
            "lns",
            2,
            {"lns.rho_pos": 0.001, "lns.rho_neg": 0.001},
        ),
        ("LNS_seed0", "lns", 0, {}),
        ("LNS_seed1", "lns", 1, {}),
        ("LNS_seed2", "lns", 2, {}),
        ("LNS_rho_pos0.01_rho_neg0.01_seed0", "lns", 0, {"lns.rho_pos": 0.01, "lns.rho_neg": 0.01}),
        ("LNS_rho_pos0.01_rho_neg0.01_seed1", "lns", 1, {"lns.rho_pos": 0.01, "lns.rho_neg": 0.01}),
        ("LNS_rho_pos0.01_rho_neg0.01_seed2", "lns", 2, {"lns.rho_pos": 0.01, "lns.rho_neg": 0.01}),
        ("LNS_rho_pos0.02_rho_neg0.02_seed0", "lns", 0, {"lns.rho_pos": 0.02, "lns.rho_neg": 0.02}),
        ("LNS_rho_pos0.02_rho_neg0.02_seed1", "lns", 1, {"lns.rho_pos": 0.02, "lns.rho_neg": 0.02}),
        ("LNS_rho_pos0.02_rho_neg0.02_seed2", "lns", 2, {"lns.rho_pos": 0.02, "lns.rho_neg": 0.02}),
        ("LNS_rho_pos0.05_rho_neg0.05_seed0", "lns", 0, {"lns.rho_pos": 0.05, "lns.rho_neg": 0.05}),
        ("LNS_rho_pos0.05_rho_neg0.05_seed1", "lns", 1, {"lns.rho_pos": 0.05, "lns.rho_neg": 0.05}),
        ("LNS_rho_pos0.05_rho_neg0.05_seed2", "lns", 2, {"lns.rho_pos": 0.05, "lns.rho_neg": 0.05}),
        ("LNS_rho_pos0.1_rho_neg0.1_seed0", "lns", 0, {"lns.rho_pos": 0.1, "lns.rho_neg": 0.1}),
        ("LNS_rho_pos0.1_rho_neg0.1_seed1", "lns", 1, {"lns.rho_pos": 0.1, "lns.rho_neg": 0.1}),
        ("LNS_rho_pos0.1_rho_neg0.1_seed2", "lns", 2, {"lns.rho_pos": 0.1, "lns.rho_neg": 0.1}),
        ("LNS_rho_pos0.2_rho_neg0.2_seed0", "lns", 0, {"lns.rho_pos": 0.2, "lns.rho_neg": 0.2}),
        ("LNS_rho_pos0.2_rho_neg0.2_seed1", "lns", 1, {"lns.rho_pos": 0.2, "lns.rho_neg": 0.2}),
        ("LNS_rho_pos0.2_rho_neg0.2_seed2", "lns", 2, {"lns.rho_pos": 0.2, "lns.rho_neg": 0.2}),
    ],
    "alpha_sweep": [
        ("LNSalpha0_alpha0.0_seed0", "lns", 0, {"lns.alpha": 0.0}),
        ("LNSalpha0_alpha0.0_seed1", "lns", 1, {"lns.alpha": 0.0}),
        ("LNSalpha0_alpha0.0_seed2", "lns", 2, {"lns.alpha": 0.0}),
        ("LNS_alpha0.01_seed0", "lns", 0, {"lns.alpha": 0.01}),
        ("LNS_alpha0.01_seed1", "lns", 1, {"lns.alpha": 0.01}),
        ("LNS_alpha0.01_seed2", "lns", 2, {"lns.alpha": 0.01}),
        ("LNS_alpha0.1_seed0", "lns", 0, {"lns.alpha": 0.1}),
        ("LNS_alpha0.1_seed1", "lns", 1, {"lns.alpha": 0.1}),
        ("LNS_alpha0.1_seed2", "lns", 2, {"lns.alpha": 0.1}),
        ("LNS_alpha0.5_seed0", "lns", 0, {"lns.alpha": 0.5}),
        ("LNS_alpha0.5_seed1", "lns", 1, {"lns.alpha": 0.5}),
        ("LNS_alpha0.5_seed2", "lns", 2, {"lns.alpha": 0.5}),
        ("LNS_seed0", "lns", 0, {}),
        ("LNS_seed1", "lns", 1, {}),
        ("LNS_seed2", "lns", 2, {}),
        ("LNS_alpha2.0_seed0", "lns", 0, {"lns.alpha": 2.0}),
        ("LNS_alpha2.0_seed1", "lns", 1, {"lns.alpha": 2.0}),
        ("LNS_alpha2.0_seed2", "lns", 2, {"lns.alpha": 2.0}),
        ("LNS_alpha5.0_seed0", "lns", 0, {"lns.alpha": 5.0}),
        ("LNS_alpha5.0_seed1", "lns", 1, {"lns.alpha": 5.0}),
        ("LNS_alpha5.0_seed2", "lns", 2, {"lns.alpha": 5.0}),
    ],
}


def _mark_finished(workdir: pathlib.Path) -> None:
    workdir.mkdir(parents=True)
    (workdir / "summary.json").write_text("{}")


def test_seeds_in_one_program_plan_the_missing_seeds_of_a_row(tmp_path):
    """Consecutive missing seeds make one S-seed program; a seed finished in either layout is
    read, not planned; single seeds and rows that may diverge stay single runs."""
    lns = protocol.LNS
    _mark_finished(tmp_path / "LNS_seed1")  # a single run (the older layout)
    _mark_finished(tmp_path / "LNS_seeds5-6" / "seed_1")  # seed 6 of an S-seed program
    seeds = range(8)
    plan = runner.row_programs(MNIST, str(tmp_path), lns, seeds, one_program=True)
    assert [(pathlib.Path(p.workdir).name, p.seeds) for p in plan] == [
        ("LNS_seed0", (0,)),
        ("LNS_seeds2-5", (2, 3, 4, 5)),
        ("LNS_seed7", (7,)),
    ]
    assert plan[1].overrides == {
        "stages": "lns",
        "init_from": str(tmp_path / "pretrain"),
        "seed": 2,
        "num_seeds": 4,
    }
    assert "num_seeds" not in plan[0].overrides
    assert runner.finished_workdir(MNIST, str(tmp_path), lns, 6) == str(
        tmp_path / "LNS_seeds5-6" / "seed_1"
    )
    assert runner.finished_workdir(MNIST, str(tmp_path), lns, 5) is None
    for kwargs in ({"one_program": False}, {"one_program": True, "allow_divergence": True}):
        singles = runner.row_programs(MNIST, str(tmp_path), lns, seeds, **kwargs)
        assert [p.seeds for p in singles] == [(0,), (2,), (3,), (4,), (5,), (7,)]


# Real activations, as in tests/test_seeds.py: the S-seed step may sum in another order, and a
# sign activation of a value within round-off of 0 would part the two runs like two seeds.
SEEDS_BUDGET = {
    **TINY_BUDGET,
    "binary.activation": "none",
    "train_subset": 0,
    "finetune.epochs": 1,
    "finetune.decay_epochs": (),
    "lns.epochs": 1,
    "lns.decay_epochs": (),
    "lns.warmup_steps": 5,
}


def _tiny_npz(path: pathlib.Path) -> str:
    """200 train and 100 test 8x8 images of 10 classes (the protocol holds out 10% of train)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (300, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 10, 300)
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return f"npz:{path}"


@pytest.mark.slow
def test_seeds_in_one_program_give_the_table_of_separate_runs(tmp_path, monkeypatch):
    """Table 1's fine-tune row, 2 seeds: separate runs, then (from the same pretrained BNN) one
    2-seed program (``--seeds-in-one-program``): the tables agree to float32 round-off, and a
    rerun reads them without training. (The fine-tune row: the runner's path is the same for
    every row, and the vmapped LNS step is tests/test_seeds.py's; the single-run layout is
    read as before: test_ablation_then_flips_and_sweep_reuse_finished_runs.)"""
    budget = {**SEEDS_BUDGET, "dataset": _tiny_npz(tmp_path / "tiny.npz")}
    row = {"fine-tune": protocol.FINE_TUNE}
    tiny = dataclasses.replace(MNIST, name="mnist-seeds", budget=budget, table1=row, paired=())
    protocol.protocol_names()
    monkeypatch.setitem(protocol.PROTOCOLS, tiny.name, tiny)
    # Both roots are "runs" under their own working directory, as the CLI's default is, so a
    # run's config (init_from: "runs/pretrain") is the same in either.
    flags = ["--seeds", "2", "--protocol", tiny.name, "--workdir", "runs"]
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    cli.main(["ablation", *flags, "--out", "out"])
    separate, together = tmp_path / "a" / "runs", tmp_path / "b" / "runs"
    shutil.copytree(separate / "pretrain", together / "pretrain")  # the same pretrained BNN
    monkeypatch.chdir(tmp_path / "b")
    one = [*flags, "--seeds-in-one-program", "--out", "out"]
    cli.main(["ablation", *one])
    assert (together / "fine-tune_seeds0-1" / "seed_1" / "summary.json").is_file()
    assert sorted(p.name for p in together.iterdir()) == ["fine-tune_seeds0-1", "pretrain"]
    tables = [json.loads((tmp_path / d / "out" / "ablation.json").read_text()) for d in "ab"]
    a, b = tables[0]["rows"]["fine-tune"], tables[1]["rows"]["fine-tune"]
    for key in ("per_seed_last", "per_seed_best", "per_seed_at_best_val"):
        assert b[key] == pytest.approx(a[key], abs=0.011), key  # 1 of the 100 test images
    assert b["flip_rate_per_epoch"] == pytest.approx(a["flip_rate_per_epoch"], abs=1e-3)
    tests = [finished(separate, "fine-tune", s)["test_accuracy"] for s in range(2)]
    assert tests == a["per_seed_last"]
    losses = [
        [r["train_loss"] for r in read_metrics(str(d))]
        for d in (separate / "fine-tune_seed0", separate / "fine-tune_seed1")
    ]
    assert losses[0] != losses[1]  # two seeds, not one twice
    # Measured: seed 0's records equal bit for bit, seed 1's train loss 8e-5 relative apart
    # (its accuracies and flip rate equal); the two seeds' losses are 3% apart.
    for s in range(2):
        replica = read_metrics(str(together / "fine-tune_seeds0-1" / f"seed_{s}"))
        assert [r["train_loss"] for r in replica] == pytest.approx(losses[s], rel=1e-3)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("bnnns.train.train_lib.train_and_evaluate", no_training)
    cli.main(["ablation", *one[:-1], "again"])
    again = json.loads((tmp_path / "b" / "again" / "ablation.json").read_text())
    assert again["rows"] == tables[1]["rows"]


def test_parallel_plan_trains_each_run_once_as_one_program_per_row(tmp_path, monkeypatch):
    """``--jobs`` with ``--seeds-in-one-program``: a run two experiments share is planned once
    with the most seeds any asks for, and may diverge only if every experiment allows it."""
    import multiprocessing

    todo = []

    class Pool:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap_unordered(self, fn, jobs):
            todo.extend(jobs)
            return []

    monkeypatch.setattr(runner, "pretrain", lambda *a: None)
    monkeypatch.setattr(runner, "reference", lambda *a: None)
    monkeypatch.setattr(multiprocessing, "get_context", lambda name: type("C", (), {"Pool": Pool}))
    _mark_finished(tmp_path / "LNS_seed1")
    seeds = {"ablation": 3, "flips": 2, "flip_sources": 1}
    runner.run_in_parallel(MNIST, str(tmp_path), list(seeds), seeds, 2, one_program=True)
    plan = {pathlib.Path(p.workdir).name: (p.seeds, div) for _, p, div, _ in todo}
    assert plan["fine-tune_seeds0-2"] == ((0, 1, 2), False)  # ablation's, not flip_sources'
    assert plan["LNS_seed0"] == ((0,), False) and plan["LNS_seed2"] == ((2,), False)
    assert plan["fine-tunelr0.001_learning_rate0.001_seeds0-1"] == ((0, 1), False)
    assert plan["LNS_reductionsum_seed0"] == ((0,), True)
    assert len(plan) == len(todo)
