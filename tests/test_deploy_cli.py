"""``python -m bnnns.deploy.export`` and ``python -m bnnns.deploy.predict`` on the inputs a
careful user gets wrong: one ``error:`` line naming the thing, exit status 2, no traceback
(docs/reliability.md). The four first tries run as real processes; the rest call ``main``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import tiny_config

from bnnns.data import DatasetInfo
from bnnns.deploy import artifact, export, predict
from bnnns.nn.models import BinaryOptions, create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good artifact (a random 8x8 CNN), one with a flipped byte, an npz of 6x6 images and
    one of 8x8 images, a run directory with a config but no checkpoint."""
    import jax
    import jax.numpy as jnp

    from bnnns.nn.layers import drop_sown

    root = tmp_path_factory.mktemp("cli")
    model = create_model("cnn", num_classes=10, binary=BinaryOptions(), width=4)
    x = jnp.zeros((1, 8, 8, 1))
    variables = drop_sown(jax.jit(lambda k: model.init(k, x))(jax.random.key(0)))
    deployable = export.deployable_variables(model, variables, x, "layer")
    config = tiny_config()
    info = DatasetInfo("toy", (8, 8, 1), 10, 16, 16, "none", mean=(0.1,), std=(0.3,))
    good = root / "good.bnn"
    artifact.write(export.make_artifact(deployable, export.model_header(config, info)), good)
    data = good.read_bytes()
    bad = root / "bad.bnn"
    bad.write_bytes(data[:-40] + bytes([data[-40] ^ 0xFF]) + data[-39:])
    rng = np.random.default_rng(0)
    for name, size in (("six", 6), ("eight", 8)):
        x = rng.integers(0, 255, (16, size, size), dtype=np.uint8)
        y = np.arange(16) % 10
        np.savez(root / f"{name}.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    return root


def _cli(module, *args):
    done = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def _one_error_line(err, *names):
    lines = [line for line in err.splitlines() if not line.startswith("kernel: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["export: missing run dir", "export: no checkpoint", "predict: corrupted", "predict: shape"],
)
def test_cli_errors_as_processes(files, case):
    out = files / "m.bnn"
    module, want = {
        "export: missing run dir": (
            ("bnnns.deploy.export", files / "missing", "--out", out),
            (files / "missing", "does not exist"),
        ),
        "export: no checkpoint": (
            ("bnnns.deploy.export", files / "run", "--out", out),
            (files / "run", "no checkpoint of stages 'pretrain,lns'"),
        ),
        "predict: corrupted": (
            ("bnnns.deploy.predict", files / "bad.bnn"),
            (files / "bad.bnn", "checksum mismatch"),
        ),
        "predict: shape": (
            ("bnnns.deploy.predict", files / "good.bnn", "--dataset", f"npz:{files / 'six.npz'}"),
            ("six.npz", "has images of shape (6, 6, 1), the model takes (8, 8, 1)"),
        ),
    }[case]
    code, stdout, err = _cli(*module)
    assert code == 2, (code, err[-2000:])
    assert stdout == ""
    _one_error_line(err, *want)
    assert not out.exists()


def test_export_main_errors(files, capsys):
    out = files / "m.bnn"
    cases = [
        ([files / "run", "--out", files], (f"--out {files} is a directory",)),  # before restoring
        ([files / "good.bnn", "--out", out], ("good.bnn", "is a file, not a run directory")),
    ]
    broken = files / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cases.append(([broken, "--out", out], ("broken/config.json", "not a readable config")))
    for argv, want in cases:
        assert export.main(list(map(str, argv))) == 2
        _one_error_line(capsys.readouterr().err, *want)
    assert not out.exists()


def test_predict_main_errors(files, capsys):
    good, eight = str(files / "good.bnn"), f"npz:{files / 'eight.npz'}"
    missing = files / "nowhere" / "logits.npy"
    cases = [
        ([str(files)], (f"artifact '{files}' is a directory",)),
        ([good, "--dataset", eight, "--save-logits", str(missing)], (missing.parent, "not exist")),
        ([good, "--dataset", eight, "--batch-size", "0"], ("--batch-size must be >= 1, got 0",)),
    ]
    for argv, want in cases:
        assert predict.main(argv) == 2
        _one_error_line(capsys.readouterr().err, *want)
    assert not missing.parent.exists()
    assert predict.main([good, "--dataset", eight, "--json"]) == 0  # the same inputs are fine
    assert json.loads(capsys.readouterr().out)["count"] == 16
