"""Shared test settings: a fast, deterministic Hypothesis profile."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "bnnns",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile("bnnns")
