"""bnnns: binary neural networks with a learned binarization (LNS; Han et al., ICML 2020).

The math is plain functions of arrays (estimators, losses, metrics, the mapping network);
Flax modules compose them; the trainer is a library (:mod:`bnnns.train_lib`).
"""

from bnnns import estimators, losses, metrics, scaling
from bnnns.estimators import approx_sign, sign, ste_sign
from bnnns.layers import BinaryConv, BinaryDense, collect_aux_loss
from bnnns.losses import lns_loss, unbiased_loss
from bnnns.mapping import MappingNet
from bnnns.metrics import flip_rate
from bnnns.scaling import weight_scale

__version__ = "0.1.0"

__all__ = [
    "BinaryConv",
    "BinaryDense",
    "MappingNet",
    "approx_sign",
    "collect_aux_loss",
    "estimators",
    "flip_rate",
    "lns_loss",
    "losses",
    "metrics",
    "scaling",
    "sign",
    "ste_sign",
    "unbiased_loss",
    "weight_scale",
]
