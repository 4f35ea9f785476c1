"""bnnns for Flax NNX: ``bnnns.nnx.BinaryConv``, ``BinaryDense``, ``MappingNet``, ``BinaryMLP``.

The NNX layers (:mod:`bnnns.nn.nnx_layers`) and model twins (:mod:`bnnns.nn.nnx_models`) under
one name, loaded on first use (``import bnnns`` does not import ``flax.nnx``). The linen layers
also run under ``nnx.bridge.ToNNX``; :func:`collect_aux_loss` sums the auxiliary loss of both.
"""

from bnnns.nn.nnx_layers import (
    LNS,
    AuxFloor,
    AuxLoss,
    BinaryConv,
    BinaryDense,
    BinaryWeights,
    DeployedWeights,
    LabelAgreement,
    LNSLabels,
    MappingNet,
    TrainingProgress,
    collect_aux_loss,
    set_progress,
    to_linen_variables,
)
from bnnns.nn.nnx_models import BinaryMLP

__all__ = [
    "BinaryConv",
    "BinaryDense",
    "MappingNet",
    "BinaryMLP",
    "LNS",
    "AuxLoss",
    "AuxFloor",
    "LabelAgreement",
    "BinaryWeights",
    "LNSLabels",
    "DeployedWeights",
    "TrainingProgress",
    "collect_aux_loss",
    "set_progress",
    "to_linen_variables",
]
