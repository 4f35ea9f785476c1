"""The CIFAR-10 protocol (``--protocol cifar10 --dataset folder:DIR``; RESULTS.md): Table 1,
Fig. 3 and the D2 readings on real CIFAR-10 images with the binary CNN of
``configs/cifar10_cnn.py``.

One pretrained BNN (seed 0, 10 epochs) is fine-tuned with the same budget by every row (3 epochs,
SGD lr 0.01); the float reference is the same network with real weights and ReLU, trained like
the BNN. A validation split carved from the training set (10%, the same for every seed) is the
one used for choices; the test set only reports. ``flip_sources`` holds the D2 readings (the
weight STE on q^ and the warm start's stop), one seed each.
"""

from __future__ import annotations

from bnnns.experiments.protocol import (
    FIG3,
    FINE_TUNE,
    LNS,
    LNS_ALPHA0,
    TABLE1,
    Protocol,
    Run,
    register,
)

# The same network in float: real weights, ReLU, trained like the pretrained BNN.
FLOAT_REFERENCE = Run(
    "float", "pretrain", {"seed": 0, "binary.weight_binarizer": "real", "binary.activation": "relu"}
)

CIFAR10 = register(
    Protocol(
        name="cifar10",
        title="CIFAR-10 (JPEG copy)",
        config="configs/cifar10_cnn.py",
        pretrain=Run("pretrain", "pretrain", {"seed": 0}),
        reference=FLOAT_REFERENCE,
        table1=TABLE1,
        paired=(("LNS", "fine-tune"), ("LNS", "LNS alpha=0"), ("fine-tune", "LNS alpha=0")),
        fig3=FIG3,
        # The D2 readings (issue 19): the weight STE on q^ and where the warm start stops.
        flip_sources={
            "fine-tune (reference)": FINE_TUNE,
            "LNS, clipped STE on q^ (D2 default)": LNS,
            "LNS alpha=0": LNS_ALPHA0,
            "LNS, identity STE (the old D2)": Run("LNS", "lns", {"lns.weight_ste": "identity"}),
            "LNS, Eq. 3 as printed (gradient clipped to [-1, 1], no mask)": Run(
                "LNS", "lns", {"lns.weight_ste": "clip_grad"}
            ),
            "LNS, warm start stopped at the 99.5% agreement target": Run(
                "LNS", "lns", {"lns.warmup_tolerance": 0.0}
            ),
        },
        sweeps={},
        seeds={"ablation": 3, "flip_sources": 1, "flips": 1},
    )
)


def resnet20_budget(pretrain_epochs: float, finetune_epochs: float) -> dict:
    """The paper's ResNet-20 recipe (configs/cifar10_resnet20_*.py) at a reduced epoch count:
    pretrain ``pretrain_epochs`` at lr 0.1, cosine; every Table 1 row ``finetune_epochs`` at lr
    0.01, x0.1 at 1/4, 1/2 and 3/4 of the budget (the paper's 30/60/90 of 120)."""
    decay = tuple(round(f * finetune_epochs, 3) for f in (0.25, 0.5, 0.75))
    budget = {
        "augment": "cifar",
        "validation_fraction": 0.1,
        "validation_seed": 0,
        "progress_bar": False,
        "pretrain.epochs": pretrain_epochs,
    }
    for stage in ("finetune", "lns"):
        budget |= {f"{stage}.epochs": finetune_epochs, f"{stage}.decay_epochs": decay}
    return budget


# The accelerator script's protocol (bnnns.experiments.accelerator): binary ResNet-20 (D11)
# with the paper's recipe at 20 pretrain and 5 fine-tuning epochs, Table 1 only.
CIFAR10_RESNET20 = register(
    Protocol(
        name="cifar10_resnet20",
        title="CIFAR-10 (JPEG copy), ResNet-20",
        config="configs/cifar10_resnet20_pretrain.py",
        pretrain=Run("pretrain", "pretrain", {"seed": 0}),
        reference=FLOAT_REFERENCE,
        table1=TABLE1,
        paired=(("LNS", "fine-tune"), ("LNS", "LNS alpha=0")),
        fig3={},
        flip_sources={},
        sweeps={},
        seeds={"ablation": 1},
        budget=resnet20_budget(20, 5),
    )
)
