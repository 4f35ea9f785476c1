"""Model zoo, chosen by name from the config (``config.model.name``)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from bnnns.nn.models.alexnet import AlexNet
from bnnns.nn.models.birealnet import BiRealNet18
from bnnns.nn.models.common import BinaryOptions
from bnnns.nn.models.mnist import BinaryCNN, BinaryMLP
from bnnns.nn.models.resnet18 import ResNet18
from bnnns.nn.models.resnet20 import ResNet20

__all__ = [
    "MODELS",
    "BinaryOptions",
    "create_model",
    "BinaryCNN",
    "BinaryMLP",
    "ResNet20",
    "BiRealNet18",
    "ResNet18",
    "AlexNet",
]

MODELS: dict[str, type[nn.Module]] = {
    "cnn": BinaryCNN,
    "mlp": BinaryMLP,
    "resnet20": ResNet20,
    "birealnet18": BiRealNet18,
    "resnet18_dorefa": ResNet18,
    "alexnet_dorefa": AlexNet,
}


def create_model(name: str, *, num_classes: int, binary: BinaryOptions, **kwargs: Any) -> nn.Module:
    """Instantiate the model ``name`` (one of :data:`MODELS`) with the given binarization.

    Example:
        >>> from bnnns.nn.models import create_model, BinaryOptions
        >>> type(create_model("resnet20", num_classes=10, binary=BinaryOptions())).__name__
        'ResNet20'
    """
    if name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](num_classes=num_classes, binary=binary, **kwargs)
