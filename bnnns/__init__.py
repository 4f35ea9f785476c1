"""bnnns: binary neural networks with a learned binarization (LNS; Han et al., ICML 2020).

The package is split by concern (docs/architecture.md): :mod:`bnnns.core` holds the math as
plain functions of arrays (estimators, losses, the mapping network, metrics), :mod:`bnnns.nn`
the Flax layers and models that compose it, :mod:`bnnns.data` the input, :mod:`bnnns.train`
the trainer (a library: :func:`bnnns.train.train_lib.train_and_evaluate`), :mod:`bnnns.deploy`
export and exact integer inference, and :mod:`bnnns.bench` / :mod:`bnnns.experiments` the tools.
:mod:`bnnns.nnx` holds the Flax NNX layers (loaded on first use).
"""

import importlib as _importlib

# _xla_cpu sets XLA_FLAGS on import, before any module below can start a JAX backend
from bnnns import _compat, _xla_cpu  # noqa: F401
from bnnns.core import estimators, losses, metrics, scaling
from bnnns.core.estimators import approx_sign, sign, ste_sign
from bnnns.core.losses import lns_loss, unbiased_loss
from bnnns.core.mapping import MappingNet
from bnnns.core.metrics import flip_rate
from bnnns.core.scaling import weight_scale
from bnnns.nn.layers import BinaryConv, BinaryDense, collect_aux_loss

_compat.install()

__version__ = "0.1.0"

__all__ = [
    "sign",
    "ste_sign",
    "approx_sign",
    "weight_scale",
    "unbiased_loss",
    "lns_loss",
    "flip_rate",
    "MappingNet",
    "BinaryConv",
    "BinaryDense",
    "collect_aux_loss",
    "estimators",
    "losses",
    "metrics",
    "scaling",
]


def __getattr__(name: str):
    """``bnnns.layers``, ``bnnns.train_lib``, ...: the modules under their old names."""
    if f"bnnns.{name}" in _compat.MOVED or name == "nnx":  # nnx: imports flax.nnx on first use
        return _importlib.import_module(f"bnnns.{name}")
    raise AttributeError(f"module 'bnnns' has no attribute {name!r}")
