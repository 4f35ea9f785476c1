"""Code written against the flat layout (before docs/architecture.md) keeps working."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest

import bnnns
from bnnns import _compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("old", sorted(_compat.MOVED))
def test_old_path_is_the_new_module(old):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(_compat.MOVED[old])  # one module, not a copy
    assert module.__name__ == _compat.MOVED[old]
    assert sys.modules[old] is module
    if caught:  # only the first import of a name warns
        assert any(_compat.MOVED[old] in str(w.message) for w in caught)


def test_submodule_of_a_moved_package():
    old = importlib.import_module("bnnns.models.common")  # never imported before in this test
    assert old is importlib.import_module("bnnns.nn.models.common")


def test_old_attributes_of_the_package():
    assert bnnns.layers.drop_sown is importlib.import_module("bnnns.nn.layers").drop_sown
    assert bnnns.train_lib.train_and_evaluate.__module__ == "bnnns.train.train_lib"
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        _ = bnnns.not_a_module


def test_new_name():
    assert _compat.new_name("bnnns.models.resnet20") == "bnnns.nn.models.resnet20"
    assert _compat.new_name("bnnns.modelsx") is None
    assert _compat.new_name("bnnns.core.losses") is None


@pytest.mark.parametrize(
    "old, new",
    [("bnnns.export", "bnnns.deploy.export"), ("bnnns.stability", "bnnns.bench.stability")],
)
def test_old_python_dash_m_runs_the_new_module(old, new):
    out = subprocess.run(
        [sys.executable, "-m", old, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
