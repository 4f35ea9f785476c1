"""Shared test settings: a fast, deterministic Hypothesis profile."""

import os

# Tests compile many small programs: XLA CPU at optimization level 0 compiles ~10x faster.
# Benchmarks (bnnns.bench) run without this flag.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "bnnns",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile("bnnns")
