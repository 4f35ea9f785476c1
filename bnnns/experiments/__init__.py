"""Experiments (temporary)."""

from bnnns.experiments._legacy import *  # noqa: F401,F403
