"""The benchmarked configurations: a :class:`Case` is one model x binarizer at one size.

Binarizers: ``float`` (the float reference: real activations, ``weight_binarizer="real"``),
``sign``, ``lns``, ``lns_bf16`` (LNS with ``mapping_dtype="bfloat16"``) and ``lns_ref`` (LNS with
``mapping_impl="reference"``, the mapping network before issue 11). Models: the repository's
recipes (``resnet20``, ``birealnet18``), the peers' ResNet-20 (``resnet20_peer``), the default
job's MNIST CNN (``mnist_cnn``: ``configs/mnist_lns.py``'s width 16, 28x28x1, 10 classes) and any
other model of :data:`bnnns.nn.models.MODELS` with its default options at ImageNet shapes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from bnnns.nn.models import MODELS as MODEL_ZOO
from bnnns.nn.models import BinaryCNN, BinaryOptions, BiRealNet18, ResNet20

__all__ = [
    "LR",
    "MOMENTUM",
    "LNS_ALPHA",
    "MODELS",
    "BINARIZERS",
    "LNS_BINARIZERS",
    "DEFAULTS",
    "ZOO_DEFAULTS",
    "Case",
    "binary_options",
    "defaults",
    "build",
]

LR, MOMENTUM = 0.05, 0.9  # as the peers (/work/shared/peers/common.py)
# Weight of the sown LNS losses. Any alpha > 0 costs the same; the recipes' 1.0 with the sum
# reduction diverges to NaN within a few steps at lr 0.05 from a random (not warm-started) init;
# 1e-6 keeps every benchmarked model finite over the timed steps.
LNS_ALPHA = 1e-6
# And any name in bnnns.nn.models.MODELS:
MODELS = ("resnet20", "resnet20_peer", "birealnet18", "mnist_cnn")
# lns_bf16: LNS with mapping_dtype="bfloat16"; lns_ref: LNS with mapping_impl="reference".
BINARIZERS = ("float", "sign", "lns", "lns_bf16", "lns_ref")
LNS_BINARIZERS = ("lns", "lns_bf16", "lns_ref")
# (batch, image size, base width) per model, for the full run and for --quick.
DEFAULTS: dict[str, dict[str, tuple[int, int, int]]] = {
    "resnet20": {"full": (128, 32, 16), "quick": (128, 32, 16)},
    "resnet20_peer": {"full": (128, 32, 16), "quick": (128, 32, 16)},
    "birealnet18": {"full": (8, 224, 64), "quick": (2, 64, 16)},
    "mnist_cnn": {"full": (128, 28, 16), "quick": (128, 28, 16)},
}
# A model of the zoo without a recipe here: ImageNet shapes (batch, image, width).
ZOO_DEFAULTS = {"full": (8, 224, 64), "quick": (2, 64, 16)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration to time: ``model`` x ``binarizer`` at ``batch`` and ``image`` size."""

    model: str
    binarizer: str
    batch: int
    image: int
    width: int

    @property
    def name(self) -> str:
        """``model:binarizer``, as ``--one`` takes it."""
        return f"{self.model}:{self.binarizer}"


def binary_options(model: str, binarizer: str) -> BinaryOptions:
    """Binarization of ``model``: the repo's recipes, or the peers' model for resnet20_peer.

    Raises:
        ValueError: an unknown ``model`` or ``binarizer``.
    """
    if binarizer not in BINARIZERS:
        raise ValueError(f"binarizer must be one of {BINARIZERS}, got {binarizer!r}")
    lns = binarizer in LNS_BINARIZERS
    if model == "resnet20":  # configs/cifar10_resnet20_{pretrain,lns}.py
        opts = BinaryOptions(weight_scale="layer", weight_ste="identity")
    elif model == "resnet20_peer":  # /work/shared/peers/common.py: clipped STE, no scale
        opts = BinaryOptions(weight_scale="none", weight_ste="clipped")
    elif model == "birealnet18":  # configs/imagenet_birealnet18_{pretrain,lns}.py
        ste = "identity" if lns else "clipped"
        opts = BinaryOptions(activation="approx_sign", weight_scale="channel", weight_ste=ste)
    elif model == "mnist_cnn":  # configs/mnist_lns.py: the zoo's defaults (clipped STE)
        opts = BinaryOptions()
    elif model in MODEL_ZOO:  # another model of the zoo: its own defaults
        opts = BinaryOptions()
    else:
        raise ValueError(f"model must be one of {(*MODELS, *sorted(MODEL_ZOO))}, got {model!r}")
    if binarizer == "float":  # the plain float network of the same shape
        return dataclasses.replace(opts, activation="none", weight_binarizer="real")
    dtype = "bfloat16" if binarizer == "lns_bf16" else "float32"
    impl = "reference" if binarizer == "lns_ref" else opts.mapping_impl
    return dataclasses.replace(
        opts, weight_binarizer="lns" if lns else "sign", mapping_dtype=dtype, mapping_impl=impl
    )


def defaults(model: str, size: str) -> tuple[int, int, int]:
    """``(batch, image, width)`` of ``model`` for ``size`` (``"full"`` or ``"quick"``)."""
    if model in DEFAULTS:
        return DEFAULTS[model][size]
    binary_options(model, "sign")  # the clear error for an unknown model
    return ZOO_DEFAULTS[size]


def build(case: Case) -> tuple[nn.Module, tuple[int, int, int], int]:
    """``(model, image shape HWC, number of classes)`` of a case."""
    opts = binary_options(case.model, case.binarizer)
    shape = (case.image, case.image, 3)
    if case.model == "mnist_cnn":
        cnn = BinaryCNN(num_classes=10, width=case.width, binary=opts)
        return cnn, (case.image, case.image, 1), 10
    if case.model == "birealnet18":
        return BiRealNet18(num_classes=1000, width=case.width, binary=opts), shape, 1000
    if case.model not in ("resnet20", "resnet20_peer"):  # the zoo's model at ImageNet shapes
        cls = MODEL_ZOO[case.model]
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {"width": case.width} if "width" in fields else {}
        return cls(num_classes=1000, binary=opts, **kw), shape, 1000
    kwargs = {"block": "classic", "shortcut": "B"} if case.model == "resnet20_peer" else {}
    return ResNet20(num_classes=10, width=case.width, binary=opts, **kwargs), shape, 10
