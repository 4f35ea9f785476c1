"""Benchmarks (temporary: being split)."""

from bnnns.bench._legacy import *  # noqa: F401,F403
from bnnns.bench._legacy import ReferenceMappingNet, main  # noqa: F401
