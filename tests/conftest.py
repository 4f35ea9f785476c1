"""Shared test settings: fast XLA compiles, one compilation cache per run, Hypothesis profiles
and a seed per run.

Every run draws new Hypothesis examples from one seed, printed in pytest's header
(``hypothesis seed: N``) and by Hypothesis with any failure; ``--hypothesis-seed=N`` replays it.
Profiles: ``bnnns`` (default, 25 examples per property) and ``nightly``
(``--hypothesis-profile=nightly``: ``BNNNS_HYPOTHESIS_EXAMPLES`` examples, default 500; CI can
run it at a small count).
"""

import os
import random
import shutil
import sys
import tempfile

from fast_compile import FAST_COMPILE  # noqa: E402  (no imports of its own)

# Tests compile many small programs: fast_compile.py says which flags make that faster.
# Benchmarks (bnnns.bench) run without them.
os.environ.setdefault("XLA_FLAGS", FAST_COMPILE)

# One persistent compilation cache per test run, shared by the xdist workers and every
# subprocess they start (all inherit the environment): many tests train the same tiny
# pipelines, and XLA's compile was most of their time (a repeated mock-data run: 86 s -> 27 s).
# The key is the program, the XLA flags and the jax version, so a hit runs the same executable.
# The process that made the directory (the xdist controller, or the only process) removes it.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bnnns-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" in sys.modules:  # too late for the environment: set the config as well
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from hypothesis import HealthCheck, settings  # noqa: E402

_COMMON = {
    "deadline": None,
    "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.differing_executors],
}
settings.register_profile("bnnns", max_examples=25, **_COMMON)
settings.register_profile(
    "nightly", max_examples=int(os.environ.get("BNNNS_HYPOTHESIS_EXAMPLES", "500")), **_COMMON
)
settings.load_profile("bnnns")


def pytest_configure(config):
    """One seed for the run (xdist workers get the controller's options, so the same one)."""
    if getattr(config.option, "hypothesis_seed", "absent") is None:
        config.option.hypothesis_seed = random.randrange(2**32)


def pytest_report_header(config):
    seed = getattr(config.option, "hypothesis_seed", None)
    return f"hypothesis seed: {seed} (replay with --hypothesis-seed={seed})"


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
