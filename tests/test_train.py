"""End-to-end tests of the training pipeline (issue: train BNNs end to end)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from helpers import run_optimized, tiny_config

from bnnns.train.checkpointing import StageCheckpointer
from bnnns.train.metric_writer import read_metrics
from bnnns.train.train_lib import restore_stage, train_and_evaluate


class Crash(Exception):
    pass


def crash_at(stage, epoch):
    def callback(record):
        if record["stage"] == stage and record["epoch"] == epoch:
            raise Crash(f"{stage} epoch {epoch}")

    return callback


def check_outputs(tmp_path, summary):
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert [s["stage"] for s in on_disk["stages"]] == ["pretrain", "lns"]
    for s in on_disk["stages"]:
        assert set(s) >= {"stage", "test_accuracy", "best_test_accuracy", "steps", "seconds"}
        assert 0.0 <= s["test_accuracy"] <= s["best_test_accuracy"] <= 1.0
        assert s["steps"] == 2 * (512 // 64)
    assert (
        on_disk["test_accuracy"]
        == summary["test_accuracy"]
        == on_disk["stages"][-1]["test_accuracy"]
    )
    assert on_disk["config"]["stages"] == "pretrain,lns"
    lns = on_disk["stages"][1]
    assert lns["warm_start"]["min_agreement"] > 0.9
    assert set(lns["label_agreement"]) == {"BinaryConv_0", "BinaryConv_1", "BinaryConv_2"}
    records = read_metrics(str(tmp_path))
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("pretrain", 1),
        ("pretrain", 2),
        ("lns", 1),
        ("lns", 2),
    ]
    for r in records:
        assert 0 <= r["flip_rate"] <= 1 and np.isfinite(r["train_loss"])
        assert set(r["flip_rate_per_layer"]) == {"BinaryConv_0", "BinaryConv_1", "BinaryConv_2"}
    assert records[2]["train_aux"] != 0 and records[0]["train_aux"] == 0
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    config = tiny_config(**{"checkpoint_every_steps": 3})
    check_outputs(tmp_path / "straight", train_and_evaluate(config, str(tmp_path / "straight")))
    resumed = str(tmp_path / "resumed")
    for stage in ("pretrain", "lns"):
        with pytest.raises(Crash):
            train_and_evaluate(config, resumed, callbacks=[crash_at(stage, 1)])
        # The failed run's saves are finished when it returns (a rerun in this process
        # listed a step its manager was still deleting): steps 3, 6, 8 saved, the newest 2 kept.
        assert sorted(os.listdir(os.path.join(resumed, "checkpoints", stage))) == ["6", "8"]
    summary = train_and_evaluate(config, resumed)
    a, meta_a = restore_stage(config, str(tmp_path / "straight"), "lns")
    b, meta_b = restore_stage(config, resumed, "lns")
    assert int(a.step) == int(b.step) == 16
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.model_state, b.model_state)
    assert [r["test_accuracy"] for r in meta_a["history"]] == [
        r["test_accuracy"] for r in meta_b["history"]
    ]
    assert len(summary["stages"]) == 2
    assert len(read_metrics(resumed)) == 4  # nothing logged twice


def test_close_after_error_reports_a_failed_save_without_raising(tmp_path, monkeypatch, capsys):
    """The stage's own error is the one raised; a save that failed too is one warning line."""
    ckpt = StageCheckpointer(str(tmp_path / "ckpt"))

    def failed_save():
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt._manager, "wait_until_finished", failed_save)
    ckpt.close_after_error()
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert f"save in flight in {ckpt.directory} failed as well: OSError: No space left" in out


def test_mid_epoch_resume_keeps_the_whole_epochs_train_metrics(tmp_path):
    """Resume from a mid-epoch checkpoint: same weights, and epoch means over all its steps."""
    config = tiny_config(**{"stages": "pretrain", "checkpoint_every_steps": 3})
    train_and_evaluate(config, str(tmp_path / "straight"))
    resumed = tmp_path / "resumed"
    with pytest.raises(Crash):
        train_and_evaluate(config, str(resumed), callbacks=[crash_at("pretrain", 1)])
    # The crash leaves the mid-epoch checkpoint of step 6 and, if its asynchronous save
    # finished, the epoch end (8): drop that one, so the run resumes mid-epoch.
    ckpt = resumed / "checkpoints" / "pretrain"
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert steps[-1] in (6, 8) and 6 in steps, steps
    shutil.rmtree(ckpt / "8", ignore_errors=True)
    train_and_evaluate(config, str(resumed))
    straight, again = read_metrics(str(tmp_path / "straight")), read_metrics(str(resumed))
    assert [r["step"] for r in again] == [r["step"] for r in straight] == [8, 16]
    for a, b in zip(straight, again, strict=True):
        for key in ("train_loss", "train_accuracy", "train_grad_norm", "test_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-6), key
    a, _ = restore_stage(config, str(tmp_path / "straight"), "pretrain")
    b, _ = restore_stage(config, str(resumed), "pretrain")
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_finetune_from_init_from(tmp_path):
    train_and_evaluate(tiny_config(stages="pretrain"), str(tmp_path / "pre"))
    config = tiny_config(stages="finetune,lns", init_from=str(tmp_path / "pre"))
    summary = train_and_evaluate(config, str(tmp_path / "ft"))
    assert [s["stage"] for s in summary["stages"]] == ["finetune", "lns"]
    pre, _ = restore_stage(config, str(tmp_path / "pre"), "pretrain")
    ckpt = StageCheckpointer(str(tmp_path / "ft" / "checkpoints" / "finetune"))
    assert ckpt.latest_step() == 8
    ckpt.close()
    assert pre.params["stem"]["kernel"].shape == (3, 3, 1, 4)


@pytest.mark.slow
def test_real_mnist_subset_beats_90_percent(tmp_path):
    # in an optimised child process: this test's time is XLA running the steps (run_optimized);
    # width 8 (91.75% on a Zen 1 EPYC, 31 s of training; width 16 was 117 s of CI, issue 17)
    script = (
        "import sys; from helpers import run_optimized, tiny_config; "
        "from bnnns.train.train_lib import train_and_evaluate; "
        "c = tiny_config(stages='pretrain', train_subset=12800, batch_size=128, eval_subset=0); "
        "c.model.width = 8; c.pretrain.epochs = 3; train_and_evaluate(c, sys.argv[1])"
    )
    p = run_optimized(["-c", script, str(tmp_path)], timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["pretrain"], summary
    assert summary["stages"][0]["steps"] == 3 * 12800 // 128, summary["stages"]
    assert summary["test_accuracy"] > 0.90, summary["stages"]
