"""Export, mapping-free inference, the predict CLI and every bad-input error (method.md §1.7)."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from helpers import build_once, tiny_config

from bnnns.data import batch_iterator
from bnnns.deploy import artifact, export, inference, predict
from bnnns.nn.layers import BinaryConv, BinaryDense, drop_sown
from bnnns.nn.models import BinaryOptions, create_model
from bnnns.train.train_lib import build_model, load_data, restore_stage, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Deployed logits differ from the float eval-mode logits only by float32 rounding of the
# conv sums (the integer path is exact, the float path rounds): bound on |difference|.
LOGIT_ATOL = 1e-4


def _header(name, kwargs, shape, scale="layer", activation="ste_sign"):
    return {
        "model": {"name": name, "kwargs": kwargs, "dtype": "float32", "num_classes": 10},
        "binary": {"weight_scale": scale, "activation": activation, "act_clip": 1.0},
        "input_shape": list(shape),
        "normalization": {"mean": [0.0], "std": [1.0]},
        "dataset": "mnist",
    }


def _random_variables(model, x, seed=1):
    """Random values for every variable of ``model``, shaped by ``jax.eval_shape`` (a jitted
    init of an LNS model compiles for half a minute): kernels ``N(0, 1 / fan_in)``; scales and
    PReLU slopes ``1 + N(0, 0.25)`` (some negative, so folding meets both directions); variances
    ``|1 + N(0, 0.25)|``; BatchNorm means and biases ``N(0, 0.01)``, near the middle of the
    values the layers before them give (larger offsets decide the head's argmax alone)."""
    abstract = drop_sown(jax.eval_shape(lambda k: model.init(k, x), jax.random.key(0)))
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if len(s.shape) >= 2:
            return (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype)
        noise = 0.5 * rng.normal(size=s.shape)
        if name == "var":
            noise = np.abs(1 + noise)
        elif name in ("scale", "slope"):
            noise = 1 + noise
        else:  # means, biases: near the middle of what the layers' outputs take
            noise = 0.2 * noise
        return noise.astype(s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _zoo_case(name, kwargs, shape, binarizer, scale="layer", activation="ste_sign", seed=1):
    """A random model (:func:`_random_variables`), its artifact after a bytes round trip, 6
    random images and the model's eval-mode logits on them: one jitted apply gives the logits
    and the binary weights the artifact packs."""
    options = BinaryOptions(weight_binarizer=binarizer, weight_scale=scale, activation=activation)
    model = create_model(name, num_classes=10, binary=options, **kwargs)
    variables = _random_variables(model, jnp.zeros((1, *shape)), seed)
    images = jax.random.normal(jax.random.key(3), (6, *shape))
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["binary_weights"]))
    want, sown = apply(variables, images)
    deployable = export.deployable_variables(
        model, variables, images, scale, sown=sown["binary_weights"]
    )
    art = export.make_artifact(deployable, _header(name, kwargs, shape, scale, activation))
    return model, variables, artifact.from_bytes(artifact.to_bytes(art)), images, want


def _random_model_artifact(name, kwargs, shape, binarizer, seed=1):
    """A random model, its variables, and its artifact after a bytes round trip."""
    return _zoo_case(name, kwargs, shape, binarizer, seed=seed)[:3]


def _norm_sites(art):
    """Every BatchNorm the deployed network of ``art`` runs -> the binary layer whose int32
    sums it folds into a threshold, or ``None`` where it computes in float; traced only
    (``jax.eval_shape``), under flax's method interception."""
    model = inference.deployed_model(art, "int8")
    variables = inference.deployed_variables(art, "int8")
    sites, accumulated = {}, []

    def record(next_fun, args, kwargs, context):
        module, method = context.module, context.method_name
        path = "/".join(module.scope.path)
        if isinstance(module, BinaryConv | BinaryDense) and kwargs.get("accumulate"):
            accumulated.append(path)
        elif isinstance(module, nn.BatchNorm) and method == "sign_of_accumulator":
            assert path not in sites, path
            sites[path] = accumulated.pop()
        elif isinstance(module, nn.BatchNorm) and method == "__call__":
            assert path not in sites, path
            sites[path] = None
        return next_fun(*args, **kwargs)

    x = jnp.zeros((1, *art.header["input_shape"]))
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert not accumulated, accumulated  # every accumulator went to a BatchNorm's threshold
    return sites


# name, kwargs, input shape, weight scale, activation, binarizer, the binary layers whose
# BatchNorm folds into an integer threshold (of the header's list, in model order; docs/deploy.md)
FOLD_ALL_BUT_LAST = lambda layers: layers[:-1]  # noqa: E731
FOLD_NONE = lambda layers: []  # noqa: E731
RANDOM_MODELS = [
    ("resnet20", {"width": 4}, (8, 8, 3), "layer", "ste_sign", "sign", FOLD_NONE),
    (
        "resnet20",
        {"width": 4, "block": "classic", "shortcut": "B"},
        (8, 8, 3),
        "layer",
        "ste_sign",
        "sign",
        lambda layers: layers[0::2],  # each block's first conv (conv1 -> BN -> conv2)
    ),
    ("birealnet18", {"width": 4}, (32, 32, 3), "channel", "approx_sign", "sign", FOLD_NONE),
    (
        "resnet18_dorefa",
        {"width": 4},
        (32, 32, 3),
        "layer",
        "ste_sign",
        "sign",
        lambda layers: layers[0::2],
    ),
    (
        "alexnet_dorefa",
        {"width": 4},
        (64, 64, 3),
        "layer",
        "ste_sign",
        "sign",
        lambda layers: [n for n in layers if n != "fc1"],  # conv1-conv4, fc0
    ),
    ("mlp", {"hidden": 13, "depth": 3}, (6, 6, 1), "none", "ste_sign", "sign", FOLD_ALL_BUT_LAST),
    ("cnn", {"width": 4}, (8, 8, 1), "layer", "none", "sign", FOLD_NONE),  # real inputs
    # ReActNet's RSign: the learned thresholds (perturbed off 0 below) before each sign; an
    # RSign model folds no BatchNorm (docs/deploy.md)
    ("mlp", {"hidden": 13, "depth": 3}, (6, 6, 1), "channel", "rsign", "sign", FOLD_NONE),
    # LNS: the artifact holds sign(f_theta(W)), nothing of the mapping networks; AlexNet's fc
    # layers keep plain sign (Q10). Smallest inputs the models take (Bi-Real: 32x32 reaches
    # 1x1 in stage 4; AlexNet: 44x44 leaves 3x3 for its last VALID pool).
    pytest.param(
        "resnet20",
        {"width": 4},
        (8, 8, 3),
        "layer",
        "ste_sign",
        "lns",
        FOLD_NONE,
        marks=pytest.mark.slow,
    ),
    pytest.param(
        "birealnet18",
        {"width": 2},
        (32, 32, 3),
        "channel",
        "approx_sign",
        "lns",
        FOLD_NONE,
        marks=pytest.mark.slow,
    ),
    pytest.param(
        "alexnet_dorefa",
        {"width": 4},
        (44, 44, 3),
        "layer",
        "ste_sign",
        "lns",
        lambda layers: [n for n in layers if n != "fc1"],
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("name,kwargs,shape,scale,activation,binarizer,folds", RANDOM_MODELS)
def test_artifact_equals_eval_mode_on_random_inputs(
    name, kwargs, shape, scale, activation, binarizer, folds
):
    """Packed predict equals the float eval-mode logits (identical argmax); the artifact's
    header lists each binary layer as a conv or dense of its kernel's shape; the BatchNorms
    that fold into integer thresholds are exactly those after a binary layer whose output only
    feeds the next sign, every other BatchNorm of the artifact runs in float."""
    model, variables, art, images, want = _zoo_case(
        name, kwargs, shape, binarizer, scale, activation
    )
    got = inference.predict(art, images)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
    np.testing.assert_allclose(got, want, atol=LOGIT_ATOL, rtol=1e-5)
    has_mapping = any(
        "mapping" in str(k) for k in jax.tree_util.tree_flatten_with_path(variables)[0]
    )
    assert has_mapping == (binarizer == "lns")  # the check below can fail for LNS models only
    assert not any("mapping" in k for k in art.arrays)
    if activation == "rsign":
        assert any(k.endswith("act_threshold") for k in art.arrays)
    if inference.choose_kernel()[0] == "xnor":  # the default path is XNOR-popcount: vs int8
        ref = inference.predict(art, images, kernel="int8")
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=1e-6)

    # the header: version, and each binary layer a conv (kh, kw, c_in, c_out) or a dense
    # (c_in, c_out) of its latent kernel's shape, packed along c_in
    data = artifact.to_bytes(art)
    assert data[:8] == artifact.MAGIC
    assert int.from_bytes(data[8:12], "little") == artifact.FORMAT_VERSION
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(variables["params"]).items()}
    layers = art.header["binary_layers"]
    for layer, spec in layers.items():
        assert spec["shape"] == list(flat[f"{layer}/kernel"].shape), layer
        assert len(spec["shape"]) in (2, 4) and spec["packed_axis"] == len(spec["shape"]) - 2
    if name == "alexnet_dorefa":  # Q10: fc layers plain sign(W), no mapping, also under LNS
        assert {k.split("/")[0] for k in flat if "mapping" in k.split("/")} == (
            {"conv1", "conv2", "conv3", "conv4"} if binarizer == "lns" else set()
        )
        for fc in ("fc0", "fc1"):
            bits = inference.deployed_variables(art)["binary"][fc]["bits"]
            np.testing.assert_array_equal(bits, np.where(flat[f"{fc}/kernel"] >= 0, 1, -1))

    # BatchNorm folding, from the artifact's own lists: its BatchNorms and binary layers
    norms = {k[len("batch_stats/") : -len("/mean")] for k in art.arrays if k.endswith("/mean")}
    sites = _norm_sites(art)
    assert set(sites) == norms  # each of the artifact's BatchNorms runs once, folded or not
    order = [n for n in sites.values() if n is not None]
    expected = folds([n for n in _model_order(model, variables, images) if n in layers])
    assert order == expected, (order, expected)


def _model_order(model, variables, images):
    """The binary layers' paths in the order the (eval-mode) model calls them."""
    order = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, BinaryConv | BinaryDense) and (
            context.method_name == "__call__"
        ):
            path = "/".join(context.module.scope.path)
            if path not in order:
                order.append(path)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    return order


def _eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in it (jit, custom_vjp, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def test_deployed_binary_layers_compute_in_int8_with_int32_sums(cnn_artifacts):
    """§1.7: each binary conv of the deployed CNN is one convolution of int8 operands with int32
    sums; only its real layers (the stem conv and the head) compute in floating point."""
    _, _, art = cnn_artifacts["lns"]
    variables, fn = inference._prepared(art, "int8")
    eqns = list(_eqns(jax.make_jaxpr(fn)(variables, jnp.zeros((2, 8, 8, 1))).jaxpr))
    ops = [e for e in eqns if e.primitive.name in ("conv_general_dilated", "dot_general")]
    integer = [
        e
        for e in ops
        if all(v.aval.dtype == jnp.int8 for v in e.invars) and e.outvars[0].aval.dtype == jnp.int32
    ]
    assert len(integer) == len(art.header["binary_layers"]) == 3
    assert len(ops) - len(integer) == 2  # the real stem conv and head dense


@pytest.fixture(scope="module")
def cnn_artifacts():
    args = ("cnn", {"width": 4}, (8, 8, 1))
    return {b: _random_model_artifact(*args, b, seed=2) for b in ("sign", "lns")}  # 9 classes


def test_lns_artifact_is_the_sign_artifact_size_and_has_no_mapping(cnn_artifacts):
    _, sign_vars, sign_art = cnn_artifacts["sign"]
    _, lns_vars, lns_art = cnn_artifacts["lns"]
    assert any("mapping" in str(k) for k in jax.tree_util.tree_flatten_with_path(lns_vars)[0])
    assert not any("mapping" in k for k in lns_art.arrays)
    assert {k: v.shape for k, v in lns_art.arrays.items()} == {
        k: v.shape for k, v in sign_art.arrays.items()
    }
    assert len(artifact.to_bytes(lns_art)) == len(artifact.to_bytes(sign_art))
    assert lns_art.header == sign_art.header  # model, options, binary layers' kinds and shapes
    # 3 binary 3x3 convs: 1 bit per weight, 8 per byte along c_in, and one float scale each
    layers = lns_art.header["binary_layers"]
    assert len(layers) == 3
    for name, spec in layers.items():
        kh, kw, c_in, c_out = spec["shape"]
        assert lns_art.arrays[f"binary/{name}/bits"].nbytes == kh * kw * -(-c_in // 8) * c_out
        assert lns_art.arrays[f"binary/{name}/scale"].shape == ()
        assert sign_vars["params"][name]["kernel"].shape == (kh, kw, c_in, c_out)


def test_lns_predict_equals_eval_mode_and_never_builds_a_mapping_network(
    cnn_artifacts, monkeypatch
):
    model, variables, art = cnn_artifacts["lns"]
    images = jax.random.normal(jax.random.key(3), (6, 8, 8, 1))
    want = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)  # f_theta

    def forbidden(*args, **kwargs):
        raise AssertionError("a mapping network was built at inference")

    from bnnns.core.mapping import MappingNet

    monkeypatch.setattr(MappingNet, "__call__", forbidden)
    got = inference.predict(art, images)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
    np.testing.assert_allclose(got, want, atol=LOGIT_ATOL, rtol=1e-5)


# ------------------------------------------------------------------ real MNIST, end to end
@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    config = tiny_config(
        **{"pretrain.epochs": 1, "lns.epochs": 1, "lns.warmup_steps": 50, "eval_subset": 0}
    )  # the run's own test accuracy is on all 10,000 images, as predict's below
    workdir = build_once(
        tmp_path_factory, "deploy-mnist", lambda d: train_and_evaluate(config, str(d))
    )
    return config, str(workdir), json.loads((workdir / "summary.json").read_text())


def _eval_logits(config, workdir, stage):
    state, _ = restore_stage(config, workdir, stage)
    splits, info = load_data(config)
    model = build_model(config, info.num_classes, stage)
    apply = jax.jit(lambda x: model.apply({"params": state.params, **state.model_state}, x))
    batches = batch_iterator(
        splits["test"], info, global_batch_size=2000, seed=0, epoch=0, train=False
    )
    return np.concatenate([np.asarray(apply(b["image"]))[b["mask"] > 0] for b in batches])


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "lns"])
def test_exported_run_predicts_like_eval_mode_on_full_mnist(mnist_run, stage, tmp_path):
    config, workdir, summary = mnist_run
    out, logits_file = tmp_path / f"{stage}.bnn", tmp_path / "logits.npy"
    assert export.main([workdir, "--out", str(out), "--stage", stage]) == 0
    art = artifact.read(out)
    assert art.header["source"]["stage"] == stage
    assert not any("mapping" in k or "lns_labels" in k for k in art.arrays)
    # The CLI in a fresh process at XLA's default optimisation level: int8 convolutions at the
    # tests' level 0 (conftest) are unoptimised loops.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "bnnns.deploy.predict", str(out), "--dataset", "mnist", "--json"]
    p = subprocess.run(
        [*cmd, "--save-logits", str(logits_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"kernel: {inference.choose_kernel()[0]}: " in p.stderr  # xnor where it builds
    result = json.loads(p.stdout)
    run_accuracy = next(s for s in summary["stages"] if s["stage"] == stage)["test_accuracy"]
    assert result == {"accuracy": pytest.approx(run_accuracy, abs=1e-9), "count": 10000}
    logits, want = np.load(logits_file), _eval_logits(config, workdir, stage)
    assert logits.shape == want.shape == (10000, 10)
    np.testing.assert_array_equal(np.argmax(logits, -1), np.argmax(want, -1))
    np.testing.assert_allclose(logits, want, atol=LOGIT_ATOL, rtol=1e-5)


@pytest.mark.slow
def test_lns_and_sign_exports_of_one_run_have_equal_size(mnist_run, tmp_path):
    _, workdir, _ = mnist_run
    sizes, headers = {}, {}
    for stage in ("pretrain", "lns"):
        export.export_run(workdir, str(tmp_path / stage), stage)
        art = artifact.read(tmp_path / stage)
        sizes[stage], headers[stage] = art.body_bytes, art.header
        assert headers[stage].pop("source")["stage"] == stage
    assert sizes["pretrain"] == sizes["lns"]
    assert headers["pretrain"] == headers["lns"]  # only the source differs (docs/deploy.md)
    assert [len(s["shape"]) for s in headers["lns"]["binary_layers"].values()] == [4, 4, 4]
    ckpt = os.path.join(workdir, "checkpoints", "lns")
    assert os.path.isdir(ckpt)


# ------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def good_bytes():
    return artifact.to_bytes(_random_model_artifact("cnn", {"width": 4}, (8, 8, 1), "sign")[2])


def _corrupt(data, at):
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d[:10], "truncated: 10 bytes, shorter than the 20-byte prefix"),
        (lambda d: d[:100], "truncated: 100 bytes, the header alone needs"),
        (lambda d: d[:-1], "truncated: {n} bytes, expected {n1}"),
        (lambda d: d + b"x", "longer than its header says"),
        (lambda d: _corrupt(d, len(d) - 100), "checksum mismatch"),
        (lambda d: b"NOTABNN!" + d[8:], "is not a bnnns artifact"),
        (lambda d: d[:8] + (7).to_bytes(4, "little") + d[12:], "format version 7; this bnnns"),
        (lambda d: d[:20] + b"]" + d[21:], "corrupted header"),
    ],
)
def test_bad_artifacts_are_refused_with_a_clear_error(good_bytes, tmp_path, mutate, message):
    data = mutate(good_bytes)
    message = message.format(n=len(data), n1=len(data) + 1)
    path = tmp_path / "bad.bnn"
    path.write_bytes(data)
    with pytest.raises(artifact.ArtifactError, match=message.replace("(", r"\(")):
        artifact.read(path)
    assert str(path) in str(pytest.raises(ValueError, artifact.read, path).value)


def test_predict_cli_reports_a_bad_artifact(good_bytes, tmp_path, capsys):
    path = tmp_path / "bad.bnn"
    path.write_bytes(_corrupt(good_bytes, len(good_bytes) - 40))
    assert predict.main([str(path), "--json"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert predict.main([str(tmp_path / "missing.bnn")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "images,message",
    [
        (
            np.zeros((2, 8, 8, 3), np.float32),
            r"shape \(N, 8, 8, 1\) for this model, got \(2, 8, 8, 3\)",
        ),
        (np.zeros((8, 8, 1), np.float32), r"got \(8, 8, 1\)"),
        (np.zeros((2, 8, 8, 1), np.uint8), "floating point, normalised as in training.*uint8"),
        ([[0.0]], "floating point.*got dtype None"),
    ],
)
def test_wrong_images_are_refused(good_bytes, images, message):
    with pytest.raises(ValueError, match=message):
        inference.predict(artifact.from_bytes(good_bytes), images)


def test_write_is_atomic(good_bytes, tmp_path, monkeypatch):
    art = artifact.from_bytes(good_bytes)
    target = tmp_path / "model.bnn"

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        artifact.write(art, target)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file
    monkeypatch.undo()
    assert artifact.write(art, target) == len(good_bytes) == target.stat().st_size


def test_export_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not a run directory: no config.json"):
        export.export_run(str(tmp_path), str(tmp_path / "m.bnn"))
    (tmp_path / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    with pytest.raises(FileNotFoundError, match="no checkpoint of stages 'pretrain,lns'"):
        export.export_run(str(tmp_path), str(tmp_path / "m.bnn"))
    assert export.main([str(tmp_path), "--out", str(tmp_path / "m.bnn"), "--stage", "lns"]) == 2
    assert "no checkpoint of stage 'lns'" in capsys.readouterr().err
    assert not (tmp_path / "m.bnn").exists()


def test_predict_cli_reads_npz_datasets(cnn_artifacts, tmp_path, capsys):
    """The labels are the reference's own predictions, on images the test normalises itself
    with the header's (non-trivial) mean and std: predict must score 1.0, and an input path
    that normalises otherwise changes some of its 64 predictions."""
    _, _, base = cnn_artifacts["sign"]
    art = artifact.Artifact(
        {**base.header, "normalization": {"mean": [0.3], "std": [0.2]}}, base.arrays
    )
    rng = np.random.default_rng(0)
    x_test = rng.integers(0, 255, (64, 8, 8, 1), dtype=np.uint8)
    x = (x_test.astype(np.float64) / 255.0 - 0.3) / 0.2
    y_test = np.argmax(inference.predict(art, x.astype(np.float32)), -1)
    assert len(set(y_test.tolist())) >= 3  # the labels say something about the inputs
    data = tmp_path / "toy.npz"
    np.savez(data, x_train=x_test, y_train=y_test, x_test=x_test, y_test=y_test)
    path = tmp_path / "cnn.bnn"
    artifact.write(art, path)
    assert (
        predict.main([str(path), "--dataset", f"npz:{data}", "--json", "--batch-size", "16"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == {"accuracy": 1.0, "count": 64}
    assert predict.main([str(path), "--dataset", "mnist"]) == 2  # 28x28 images, model takes 8x8
    assert "has images of shape (28, 28, 1), the model takes (8, 8, 1)" in capsys.readouterr().err


def test_export_needs_only_the_run_directory(tmp_path):
    """``python -m bnnns.deploy.export RUN_DIR`` after the run's npz has moved away (another
    machine): it exits 0 and writes the artifact that an export with the data set at hand
    gives, header (shapes, classes, the data set's normalisation) and arrays alike."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (80, 8, 8), dtype=np.uint8)
    npz = tmp_path / "tiny.npz"
    np.savez(
        npz, x_train=x[:64], y_train=np.arange(64) % 10, x_test=x[64:], y_test=np.arange(16) % 10
    )
    config = tiny_config(dataset=f"npz:{npz}", stages="pretrain", batch_size=32, train_subset=0)
    config.pretrain.epochs = 0.5  # one step
    run = tmp_path / "run"
    train_and_evaluate(config, str(run))
    _, info = load_data(config)
    state, _ = restore_stage(config, str(run), "pretrain")
    expected = export.export_state(config, state, info, "pretrain")
    assert info.mean != (0.0,) and info.num_classes == 10  # the data set's, not defaults
    npz.rename(tmp_path / "elsewhere.npz")
    out = tmp_path / "m.bnn"
    done = subprocess.run(
        [sys.executable, "-m", "bnnns.deploy.export", str(run), "--out", str(out)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = artifact.read(out)
    assert got.header.pop("source")["stage"] == "pretrain"
    assert got.header == {k: v for k, v in expected.header.items() if k != "source"}
    assert got.arrays.keys() == expected.arrays.keys()
    for name, value in expected.arrays.items():
        np.testing.assert_array_equal(got.arrays[name], value, err_msg=name)
