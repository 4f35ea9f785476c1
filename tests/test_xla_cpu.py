"""bnnns' XLA:CPU flags (``bnnns._xla_cpu``): added once, never over the user's own choice."""

import os
import subprocess
import sys

from bnnns import _xla_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_configure_appends_to_the_users_flags_and_respects_their_choice():
    env = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert _xla_cpu.configure(env)
    assert env["XLA_FLAGS"].split() == ["--xla_backend_optimization_level=0", *_xla_cpu.FLAGS]
    assert not _xla_cpu.configure(env)  # once only
    assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1
    own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_ELTWISE"}
    assert not _xla_cpu.configure(own) and "ELTWISE" in own["XLA_FLAGS"]
    off = {"BNNNS_XLA_CPU_DEFAULTS": "0"}
    assert not _xla_cpu.configure(off) and "XLA_FLAGS" not in off
    empty: dict = {}
    assert _xla_cpu.configure(empty) and empty["XLA_FLAGS"] == " ".join(_xla_cpu.FLAGS)


def test_import_bnnns_moves_convolutions_off_ynnpack():
    """In a fresh process: after ``import bnnns`` a conv's gradient compiles to XLA's own
    convolutions; with the opt-out, jaxlib's default YNNPACK fusions come back."""
    code = (
        "import jax, jax.numpy as jnp, bnnns\n"
        "x, w = jnp.ones((32, 28, 28, 16)), jnp.ones((3, 3, 16, 16))\n"
        "dn = ('NHWC', 'HWIO', 'NHWC')\n"
        "f = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
        " dimension_numbers=dn) ** 2)\n"
        "print('ynn_fusion' in jax.jit(jax.grad(f, (0, 1))).lower(x, w).compile().as_text())\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "BNNNS_XLA_CPU_DEFAULTS")}
    runs = {}
    for name, extra in (("bnnns", {}), ("opt_out", {"BNNNS_XLA_CPU_DEFAULTS": "0"})):
        p = subprocess.run(
            [sys.executable, "-c", code],
            env={**base, "JAX_PLATFORMS": "cpu", **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        runs[name] = p.stdout.split()[-1]
    assert runs == {"bnnns": "False", "opt_out": "True"}
