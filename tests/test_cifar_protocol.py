"""Issue 19's pieces of the CIFAR-10 protocol: the float reference model, the training
augmentation and validation carve a protocol fixes, the weight STE read from Eq. 3 as printed,
and the protocol itself (registered, its float reference reported beside Table 1)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import bnnns
from bnnns.core.estimators import clip_grad_sign
from bnnns.data import load_dataset
from bnnns.errors import ConfigError
from bnnns.experiments import cli, protocol, report, runner
from bnnns.experiments.protocols.cifar10 import CIFAR10
from bnnns.train import train_lib
from bnnns.train.config_checks import validate_config
from bnnns.train.default_config import load_config_file

finite = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=30, deadline=None)
@given(st.lists(finite, min_size=1, max_size=9), st.lists(finite, min_size=9, max_size=9))
def test_clip_grad_sign_clips_the_gradient_value_not_its_support(xs, gs):
    """Eq. 3 as printed: forward sign (sign(0) = +1), backward clip(g, -1, 1) wherever x is."""
    x = jnp.asarray(xs, jnp.float32)
    g = jnp.asarray(gs[: len(xs)], jnp.float32)
    for fn in (clip_grad_sign, jax.jit(clip_grad_sign)):
        chex.assert_trees_all_equal(fn(x), jnp.where(x >= 0, 1.0, -1.0))
        _, vjp = jax.vjp(fn, x)
        chex.assert_trees_all_close(vjp(g)[0], jnp.clip(g, -1.0, 1.0))
    with pytest.raises(ValueError, match="clip must be a positive number, got 0.0"):
        clip_grad_sign(x, 0.0)


def test_layer_weight_stes_differ_as_d2_says():
    """The three weight STEs of a binary layer on the same kernel: identity passes g, clipped
    masks |W| > 1, clip_grad bounds g's value (the kernel has entries past 1, gradients past 1)."""
    kernel = jnp.array([[0.5, -2.0], [3.0, -0.25]])
    x = jnp.array([[4.0, -4.0]])  # real inputs: the upstream gradient per weight is +-4

    def grad(ste):
        layer = bnnns.BinaryDense(2, weight_ste=ste, weight_scale="none", activation="none")

        def loss(k):
            return layer.apply({"params": {"kernel": k}}, x, mutable=["binary_weights"])[0].sum()

        return jax.grad(loss)(kernel)

    upstream = jnp.array([[4.0, 4.0], [-4.0, -4.0]])
    chex.assert_trees_all_close(grad("identity"), upstream)
    chex.assert_trees_all_close(grad("clipped"), upstream * (jnp.abs(kernel) <= 1))
    chex.assert_trees_all_close(grad("clip_grad"), jnp.clip(upstream, -1, 1))


def test_float_reference_layer_is_relu_then_a_real_conv():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    layer = bnnns.BinaryConv(4, weight_binarizer="real", activation="relu")
    variables = layer.init(jax.random.key(1), x)
    y, cols = layer.apply({"params": variables["params"]}, x, mutable=["binary_weights"])
    kernel = variables["params"]["kernel"]
    expected = jax.lax.conv_general_dilated(
        jax.nn.relu(x), kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    chex.assert_trees_all_close(y, expected, atol=1e-5)
    # its "binary weights" are sign(W), so a float run still reports a flip rate
    chex.assert_trees_all_equal(
        cols["binary_weights"]["kernel_sign"][0], bnnns.sign(kernel).astype(jnp.int8)
    )


def _folder(root: Path, per_class: int = 6, side: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in ("a", "b"):
            for i in range(n):
                path = root / split / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path)
    return root


def test_augment_override_and_its_refusal(tmp_path):
    spec = f"folder:{_folder(tmp_path / 'data')}"
    assert load_dataset(spec)[1].augment == "none"  # a folder's own: none
    assert load_dataset(spec, augment="cifar")[1].augment == "cifar"
    with pytest.raises(ValueError, match="augment='imagenet' is not available"):
        load_dataset(spec, augment="imagenet")


def test_validation_seed_fixes_the_carve_across_run_seeds(tmp_path):
    spec = f"folder:{_folder(tmp_path / 'data', per_class=10)}"
    config = load_config_file("configs/cifar10_cnn.py", {"dataset": spec})
    picks = []
    for seed, vseed in ((0, 0), (1, 0), (1, -1)):
        config.seed, config.validation_seed = seed, vseed
        splits, _ = train_lib.load_data(config)
        picks.append(np.asarray(splits["validation"].get(np.arange(2))[0]))
    np.testing.assert_array_equal(picks[0], picks[1])  # validation_seed = 0 for both seeds
    assert not np.array_equal(picks[0], picks[2])  # -1: the run's seed carves (the old rule)


def test_config_refuses_a_weight_binarizer_the_trainer_has_not():
    config = load_config_file(
        "configs/cifar10_cnn.py", {"binary.weight_binarizer": "lns", "dataset": "mnist"}
    )
    with pytest.raises(ConfigError, match="binary.weight_binarizer='lns'"):
        validate_config(config)


def test_cifar10_protocol_is_registered_with_a_float_reference():
    assert protocol.get_protocol("cifar10") is CIFAR10
    ref = CIFAR10.reference
    assert ref.overrides["binary.weight_binarizer"] == "real"
    config = runner.load_config(CIFAR10, {"stages": ref.stage, **ref.overrides})
    assert config.model.name == "cnn" and config.augment == "cifar"
    stes = {r.overrides.get("lns.weight_ste", "clipped") for r in CIFAR10.flip_sources.values()}
    assert stes == {"clipped", "identity", "clip_grad"}  # the D2 readings


def test_ablation_markdown_shows_the_float_reference():
    row = {"last": (0.5, 0.01), "best": (0.52, 0.01), "at_best_val": (0.5, 0.0)}
    row |= {"per_seed_flip_rate_per_epoch": [[0.01]]}
    result = {
        "baseline": {"test_accuracy": 0.48},
        "float_reference": {"test_accuracy": 0.6123},
        "rows": {"LNS": row},
        "paired": {},
    }
    lines = report.ablation_markdown(result).splitlines()
    assert lines[2].startswith("| float reference") and "| 61.23 |" in lines[2]
    assert lines[3].startswith("| baseline (pretrained) | 48.00")


@pytest.mark.slow
def test_float_reference_run_through_the_cli_dataset_flag(tmp_path, monkeypatch):
    """``--dataset`` reaches every run; the reference is built with real weights and ReLU and
    the ablation reports its accuracy."""
    spec = f"folder:{_folder(tmp_path / 'data')}"
    tiny = dataclasses.replace(
        CIFAR10,
        name="cifar10-tiny",
        table1={"fine-tune": CIFAR10.table1["fine-tune"]},
        paired=(),
        budget={"model.width": 2, "batch_size": 4, "pretrain.epochs": 1, "finetune.epochs": 1},
    )
    protocol.protocol_names()
    monkeypatch.setitem(protocol.PROTOCOLS, tiny.name, tiny)
    root, out = tmp_path / "runs", tmp_path / "out"
    flags = ["--protocol", tiny.name, "--dataset", spec, "--workdir", str(root), "--out", str(out)]
    cli.main(["ablation", "--seeds", "1", *flags])
    stored = json.loads((root / "float" / "config.json").read_text())
    assert stored["dataset"] == spec and stored["binary"]["weight_binarizer"] == "real"
    ref = json.loads((root / "float" / "summary.json").read_text())["stages"][-1]
    table = json.loads((out / "ablation.json").read_text())
    assert table["float_reference"]["test_accuracy"] == ref["test_accuracy"]
    config = runner.load_config(tiny, {"stages": "pretrain", **tiny.reference.overrides})
    binary = train_lib.build_model(config, 2, "pretrain").binary
    assert (binary.weight_binarizer, binary.activation) == ("real", "relu")


def test_a_float_reference_run_is_refused_by_export(tmp_path):
    from bnnns.deploy.export import export_run

    config = load_config_file("configs/cifar10_cnn.py", {"binary.weight_binarizer": "real"})
    (tmp_path / "checkpoints" / "pretrain").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(ValueError, match="trained a float model .*weight_binarizer='real'"):
        export_run(str(tmp_path), str(tmp_path / "m.bnn"))


@pytest.mark.slow
def test_accelerator_script_runs_at_toy_size(tmp_path, capsys):
    """The device script end to end on CPU (``--toy``): unpack a tarball, train the binary
    ResNet-20 baseline, its float reference and the Table 1 rows, print the table and one
    ``accelerator`` line whose figures are the runs' own summaries."""
    import tarfile

    from bnnns.experiments import accelerator

    source = tmp_path / "src" / "cifar"
    for split in ("train", "test"):
        for c in "ab":
            for i in range(4):
                path = source / split / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path)
    tarball = tmp_path / "c.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(source, arcname="cifar")
    line = accelerator.main(["--data", str(tarball), "--workdir", str(tmp_path / "w"), "--toy"])
    printed = capsys.readouterr().out
    assert json.loads(printed.strip().splitlines()[-1]) == line
    runs = tmp_path / "w" / "runs"
    pre = json.loads((runs / "pretrain" / "summary.json").read_text())["stages"][-1]
    ref = json.loads((runs / "float" / "summary.json").read_text())["stages"][-1]
    lns = json.loads((runs / "LNS_seed0" / "summary.json").read_text())["stages"][-1]
    assert line["baseline"] == pre["test_accuracy"]
    assert line["float_reference"] == ref["test_accuracy"]
    assert line["rows"]["LNS"] == [lns["test_accuracy"]]
    assert set(line["run_s"]) == {
        "pretrain",
        "float",
        "fine-tune_seed0",
        "LNSalpha0_alpha0.0_seed0",
        "LNS_seed0",
    }
    assert "| LNS |" in printed and "| float reference" in printed
