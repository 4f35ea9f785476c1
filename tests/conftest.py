"""Shared test settings: Hypothesis profiles and a seed per run.

Every run draws new Hypothesis examples from one seed, printed in pytest's header
(``hypothesis seed: N``) and by Hypothesis with any failure; ``--hypothesis-seed=N`` replays it.
Profiles: ``bnnns`` (default, 25 examples per property) and ``nightly``
(``--hypothesis-profile=nightly``: ``BNNNS_HYPOTHESIS_EXAMPLES`` examples, default 500; CI can
run it at a small count).
"""

import os
import random

# Tests compile many small programs: XLA CPU at optimization level 0 compiles ~10x faster.
# Benchmarks (bnnns.bench) run without this flag.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

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
