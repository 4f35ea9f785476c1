"""``python -m bnnns.bench``: output format only (timings are not asserted)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from bnnns import bench
from bnnns.layers import BinaryConv, drop_sown

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
    p = subprocess.run(
        [sys.executable, "-m", "bnnns.bench", "--quick"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert {(x["model"], x["binarizer"]) for x in steps} == {
        (m, b) for m in ("resnet20", "birealnet18") for b in ("float", "sign", "lns")
    }
    for x in steps:
        assert STEP_KEYS <= x.keys(), STEP_KEYS - x.keys()
        assert x["n_timed"] == 5 and x["step_s_median"] > 0
    for x in steps:
        if x["binarizer"] == "lns":
            assert x["n_mapping_params"] > 0 and x["mapping_s_median"] > 0
            assert "mapping_share" in x
    summaries = {x["model"]: x for x in lines if x["kind"] == "summary"}
    assert set(summaries) == {"resnet20", "birealnet18"}
    for s in summaries.values():
        assert {"lns_over_sign", "sign_over_float", "mapping_share_diff"} <= s.keys()


def test_paired_one_process_reports_a_pair(capsys):
    assert bench.main(["--one", "resnet20:sign,resnet20:float", "--batch", "2", "--width", "4",
                       "--warmup", "1", "--steps", "2"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["kind"] for x in lines] == ["step", "step", "pair"]
    assert lines[0]["paired"] and lines[2]["pairs"] == 2 and lines[2]["ratio_median"] > 0


def test_float_reference_uses_latent_weights():
    conv = BinaryConv(3, activation="none")
    x = jnp.linspace(-1.0, 1.0, 2 * 4 * 4 * 2).reshape(2, 4, 4, 2)
    variables = drop_sown(conv.init(jax.random.key(0), x))
    with bench.real_weights():
        real = conv.apply(variables, x)
    binary = conv.apply(variables, x)  # patch undone: sign(W) * mean|W| again
    kernel = variables["params"]["kernel"]
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert jnp.allclose(real, expected, atol=1e-5)
    assert not jnp.allclose(binary, expected, atol=1e-3)


def test_peer_model_options_match_the_peers():
    model, shape, classes = bench.build(bench.Case("resnet20_peer", "sign", 8, 32, 16))
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
    monkeypatch.setattr(bench, "PEERBENCH", str(tmp_path))
    rc = bench.main(["--peers", "--rounds", "1", "--peer-configs", "larq_tf,torch_compile"])
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
    out = bench._peer_summary(runs)
    targets = {x["name"]: x for x in out if x["kind"] == "target"}
    assert targets["bnnns_sign_over_jax_plain"]["value"] == pytest.approx(1.05)
    assert targets["bnnns_lns_over_bnnns_sign"]["value"] == pytest.approx(1.15)
    assert targets["bnnns_lns_over_bnnns_sign"]["met"] is True
    assert targets["bnnns_pair_lns_over_sign"]["value"] == pytest.approx(1.1)
    plain = next(x for x in out if x.get("config") == "jax_plain")
    assert plain["bnnns_sign_over_this"] == pytest.approx(1.05)


def test_parse_lines_accepts_peer_prefixes():
    text = 'noise\nRESULT {"step_s_median": 1}\nAB {"pair_ratio_median": 2}\n{"kind": "step"}\n'
    assert bench._parse_lines(text) == [
        {"step_s_median": 1},
        {"pair_ratio_median": 2},
        {"kind": "step"},
    ]
