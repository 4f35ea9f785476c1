"""``python -m bnnns.bench``: output format only (timings are not asserted)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnnns
from bnnns.bench import cases, cli, mapping_ab, mapping_fn, peers, process, timing
from bnnns.nn.layers import BinaryConv, drop_sown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_KEYS = {
    "model",
    "binarizer",
    "batch",
    "compile_s",
    "first_step_s",
    "n_timed",
    "step_s_median",
    "img_per_s",
    "peak_rss_mib",
    "xla_peak_mib",
    "loss_last",
}


@pytest.mark.slow
def test_quick_prints_one_json_object_per_line():
    # --quick's step counts and per-case processes at CI sizes (the tests' XLA -O0 compiles
    # fast but runs slowly: resnet20 at --quick's batch 128 was most of this test's time), for
    # one model, the MNIST CNN: resnet20's and birealnet18's processes run the same code (and
    # resnet20's three were 130 s of CI, issue 17)
    sizes = ["--models", "mnist_cnn", "--batch", "4", "--image", "16", "--width", "4"]
    p = subprocess.run(
        [sys.executable, "-m", "bnnns.bench", "--quick", *sizes],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert {(x["model"], x["binarizer"]) for x in steps} == {
        ("mnist_cnn", b) for b in ("float", "sign", "lns")
    }
    for x in steps:
        assert STEP_KEYS <= x.keys(), STEP_KEYS - x.keys()
        assert x["n_timed"] == 5 and x["step_s_median"] > 0
    for x in steps:
        if x["binarizer"] == "lns":
            assert x["n_mapping_params"] > 0 and x["mapping_s_median"] > 0
            assert "mapping_share" in x
            assert 0 < x["mapping_flops_share"] < 1
            assert x["analytic_step_flops_valid"] < x["analytic_step_flops_plain"]
    summaries = {x["model"]: x for x in lines if x["kind"] == "summary"}
    assert set(summaries) == {"mnist_cnn"}
    for s in summaries.values():
        assert {"lns_over_sign", "sign_over_float", "mapping_share_diff"} <= s.keys()


def test_paired_one_process_reports_a_pair(capsys):
    assert cli.main(["--one", "resnet20:sign,resnet20:float", "--batch", "2", "--width", "4",
                       "--warmup", "1", "--steps", "2"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["kind"] for x in lines] == ["step", "step", "pair"]
    assert lines[0]["paired"] and lines[2]["pairs"] == 2 and lines[2]["ratio_median"] > 0


def test_float_reference_uses_latent_weights():
    opts = cases.binary_options("resnet20", "float")
    assert (opts.weight_binarizer, opts.activation) == ("real", "none")
    conv = BinaryConv(3, activation="none")
    x = jnp.linspace(-1.0, 1.0, 2 * 4 * 4 * 2).reshape(2, 4, 4, 2)
    variables = drop_sown(conv.init(jax.random.key(0), x))
    real = BinaryConv(3, activation="none", weight_binarizer="real").apply(variables, x)
    binary = conv.apply(variables, x)  # the sign layer: sign(W) * mean|W|
    kernel = variables["params"]["kernel"]
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert jnp.allclose(real, expected, atol=1e-5)
    assert not jnp.allclose(binary, expected, atol=1e-3)


def test_peer_model_options_match_the_peers():
    model, shape, classes = cases.build(cases.Case("resnet20_peer", "sign", 8, 32, 16))
    assert (model.block, model.shortcut, shape, classes) == ("classic", "B", (32, 32, 3), 10)
    b = model.binary
    assert (b.weight_binarizer, b.weight_scale, b.weight_ste, b.weight_clip) == (
        "sign",
        "none",
        "clipped",
        1.0,
    )
    assert (b.activation, b.act_clip) == ("ste_sign", 1.0)


def test_missing_peers_are_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(peers, "PEERBENCH", str(tmp_path))
    rc = cli.main(["--peers", "--rounds", "1", "--peer-configs", "larq_tf,torch_compile"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    runs = [x for x in lines if x["kind"] == "peer_run"]
    assert {x["config"] for x in runs} == {"larq_tf", "torch_compile"}
    assert all(x["status"] == "skipped" for x in runs)
    assert {x["name"] for x in lines if x["kind"] == "target"} >= {
        "bnnns_sign_over_jax_plain",
        "bnnns_lns_over_bnnns_sign",
    }


def test_peer_summary_ratios():
    def run(config, r, s):
        return {"config": config, "round": r, "step_s_median": s}

    runs = {
        "bnnns_sign": [run("bnnns_sign", 0, 0.6), run("bnnns_sign", 1, 0.66)],
        "bnnns_lns": [run("bnnns_lns", 0, 0.72), run("bnnns_lns", 1, 0.726)],
        "jax_plain": [run("jax_plain", 0, 0.6), run("jax_plain", 1, 0.6)],
        "bnnns_pair": [{"config": "bnnns_pair", "round": 0, "pair_ratio_median": 1.1}],
    }
    out = peers.peer_summary(runs)
    targets = {x["name"]: x for x in out if x["kind"] == "target"}
    assert targets["bnnns_sign_over_jax_plain"]["value"] == pytest.approx(1.05)
    assert targets["bnnns_lns_over_bnnns_sign"]["value"] == pytest.approx(1.15)
    assert targets["bnnns_lns_over_bnnns_sign"]["met"] is True
    assert targets["bnnns_pair_lns_over_sign"]["value"] == pytest.approx(1.1)
    plain = next(x for x in out if x.get("config") == "jax_plain")
    assert plain["bnnns_sign_over_this"] == pytest.approx(1.05)


def test_parse_lines_accepts_peer_prefixes():
    text = 'noise\nRESULT {"step_s_median": 1}\nAB {"pair_ratio_median": 2}\n{"kind": "step"}\n'
    assert process.parse_lines(text) == [
        {"step_s_median": 1},
        {"pair_ratio_median": 2},
        {"kind": "step"},
    ]


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_analytic_mapping_flops_counts_pairs():
    f = mapping_fn.analytic_mapping_flops([(3, 3, 4, 5)])
    assert f["analytic_fwd_flops_plain"] == 1296 * 5 * 4**2  # 81 (position, tap) pairs
    assert f["analytic_fwd_flops_valid"] == 784 * 5 * 4**2  # 49 of them read real pixels
    assert f["analytic_step_flops_valid"] == 3 * f["analytic_fwd_flops_valid"]
    dense, five = (
        mapping_fn.analytic_mapping_flops([(8, 5)]),
        mapping_fn.analytic_mapping_flops([(5, 5, 2, 3)]),
    )
    assert dense["analytic_fwd_flops_plain"] == 9 * dense["analytic_fwd_flops_valid"]  # 1x1: 1 tap
    assert five["analytic_fwd_flops_valid"] / five["analytic_fwd_flops_plain"] == 169 / 225


def test_analytic_figure_matches_xla_cost_analysis():
    """XLA counts the valid pairs of the plain conv too; the norms, ReLUs and (valid taps) the
    accumulation adds are the rest: a few % at c = 16, less when wider."""
    kernel = jnp.ones((3, 3, 16, 32))
    for impl in ("conv", "valid_taps"):
        net = bnnns.MappingNet(conv_impl=impl)
        params = net.init(jax.random.key(0), kernel)
        xla = timing.xla_flops(jax.jit(net.apply).lower(params, kernel).compile())
        analytic = mapping_fn.analytic_mapping_flops([kernel.shape])["analytic_fwd_flops_valid"]
        assert 1.0 <= xla / analytic < 1.3, (impl, xla, analytic)


def test_mapping_ab_compares_the_implementations(capsys):
    argv = ["--mapping-ab", "--models", "cnn", "--width", "4", "--warmup", "0", "--steps", "1"]
    assert cli.main(argv) == 0
    lines = _lines(capsys)
    runs = {x["variant"]: x for x in lines if x["kind"] == "mapping_ab"}
    assert set(runs) == set(mapping_ab.AB_VARIANTS)
    for x in runs.values():  # the same dL/dW from every implementation
        assert x["rel_l2_dW_vs_reference"] < 1e-4 and x["xla_peak_mib"] > 0
    (summary,) = [x for x in lines if x["kind"] == "mapping_ab_summary"]
    assert summary["speedup_auto_median"] > 0 and len(summary["loadavg_before"]) == 3
    (target,) = [x for x in lines if x["kind"] == "target"]
    assert target["target"] == 1.5 and target["value"] == summary["speedup_auto_median"]


def test_reference_binarizer_uses_the_old_mapping_network():
    case = cases.Case("resnet20", "lns_ref", 2, 8, 4)
    model, shape, _ = cases.build(case)
    assert model.binary.mapping_impl == "reference"
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, *shape)))["params"]
    first = params["BinaryConv_0"]["mapping"]
    assert set(first["Conv_0"]) == {"kernel", "bias"}  # the pre-norm biases of the old net
    model, shape, _ = cases.build(cases.Case("resnet20", "lns", 2, 8, 4))  # the default
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, *shape)))["params"]
    assert set(params["BinaryConv_0"]["mapping"]["Conv_0"]) == {"kernel"}


def test_costs_per_model_including_any_zoo_model(capsys):
    """The recipes' models run the same code (their cost fields: the --quick test above)."""
    argv = ["--costs", "--models", "cnn", "--batch", "2", "--image", "16", "--warmup", "0",
            "--steps", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    costs = {x["model"]: x for x in _lines(capsys) if x["kind"] == "cost"}
    assert set(costs) == {"cnn"}
    for c in costs.values():
        assert 0 < c["mapping_flops_share"] < 1 and c["mapping_time_share"] > 0
        assert c["step_flops_lns_minus_sign"] > 0 and c["lns_over_sign_paired"] > 0
        assert 0.9 < c["mapping_flops_over_analytic_valid"] < 1.3


@pytest.mark.slow
def test_gpu_step_script_runs_on_cpu_at_tiny_sizes(capsys):
    """The accelerator script (not measured here: no device) runs end to end, on the MNIST CNN
    (the same code as birealnet18's default: it was 180 s of CI, issue 17)."""
    argv = ["--gpu-step", "--models", "mnist_cnn", "--gpu-batches", "2", "--image", "16",
            "--width", "2", "--warmup", "0", "--steps", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    lines = _lines(capsys)
    steps = {x["binarizer"] for x in lines if x["kind"] == "step"}
    assert steps == {"sign", "lns", "lns_bf16"}
    (g,) = [x for x in lines if x["kind"] == "gpu_step"]
    assert (
        g["model"] == "mnist_cnn"
        and g["batch"] == 2
        and g["device"]
        and g["lns_over_sign"] > 0
        and g["lns_bf16_over_sign"] > 0
    )
    assert g["lns_bf16_img_per_s"] > 0


def test_profile_attributes_the_step_to_its_xla_ops(capsys):
    argv = ["--profile", "mnist_cnn:sign", "--batch", "2", "--image", "8", "--width", "4",
            "--warmup", "1", "--steps", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ops, summary = lines[:-1], lines[-1]
    assert summary["kind"] == "profile" and ops and {x["kind"] for x in ops} == {"profile_op"}
    # Three binary convs and the stem, forward and both gradients: convolutions dominate the
    # op list, and every listed op is an instruction of the compiled step.
    assert summary["per_category_s"]["conv"] > 0 and summary["n_ops"] >= len(ops)
    assert sum(x["category"] == "conv" for x in ops) >= 4
    times = [x["s_per_step"] for x in ops]
    assert times == sorted(times, reverse=True) and all(t > 0 for t in times)


def test_hlo_op_kinds_reads_fusions_that_hold_a_convolution():
    from bnnns.bench.profile import hlo_op_kinds

    text = jax.jit(lambda x, w: jnp.tanh(jax.lax.conv(x, w, (1, 1), "SAME")) @ jnp.ones((3, 3)))
    hlo = text.lower(jnp.ones((1, 2, 3, 3)), jnp.ones((2, 2, 3, 3))).compile().as_text()
    kinds = hlo_op_kinds(hlo)
    assert "conv" in kinds.values() and "dot" in kinds.values(), kinds


def test_conv_lowerings_have_xlas_gradients_and_print_rows(capsys):
    """Every lowering of ``bench.conv_lowering`` computes the input and kernel gradients of
    XLA's NHWC convolution (odd sizes and channel counts, so the padding and the taps' windows
    are exercised), and the CLI prints one row per (shape, round, lowering)."""
    from bnnns.bench import conv_lowering

    x = jax.random.normal(jax.random.key(1), (2, 5, 7, 3))
    w = jax.random.normal(jax.random.key(2), (3, 3, 3, 5))
    want = conv_lowering.conv_grads("xla_nhwc")(x, w)

    def loss(x, w):
        dn = ("NHWC", "HWIO", "NHWC")
        return jnp.sum(
            jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) ** 2
        )

    eager = jax.grad(loss, argnums=(0, 1))(x, w)  # not jitted
    for got, ref in zip(want, eager, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    for name in conv_lowering.LOWERINGS:
        got = conv_lowering.conv_grads(name)(x, w)
        for g, r in zip(got, want, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4, err_msg=name)
    argv = ["--batch", "2", "--shapes", "5x3", "--rounds", "1", "--steps", "1"]
    assert conv_lowering.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["lowering"] for r in rows] == list(conv_lowering.LOWERINGS)
    assert all(r["dw_rel_err"] < 1e-5 and r["ms"] > 0 for r in rows)
