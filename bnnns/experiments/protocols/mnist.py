"""The MNIST protocol (``--protocol mnist``, the default; RESULTS.md): the paper's ablations on
the binary CNN of ``configs/mnist_ablation.py``.

One pretrained BNN (seed 0) is fine-tuned with the same budget by every row (the config file
holds it: 3 epochs, SGD lr 0.01); a validation split carved from the training set (10%) is the
one used for choices, the test set only reports. The directory stems below are the run
directories of the runs already computed (RESULTS.md's EXP_DIR): changing one retrains it.
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
    Sweep,
    register,
)


def _lns(overrides: dict) -> Run:
    return Run("LNS", "lns", overrides)


MNIST = register(
    Protocol(
        name="mnist",
        title="MNIST",
        config="configs/mnist_ablation.py",
        pretrain=Run("pretrain", "pretrain", {"seed": 0}),
        # Table 1: baseline (the pretrained BNN), fine-tune, LNS alpha=0, LNS.
        table1=TABLE1,
        paired=(("LNS", "fine-tune"), ("LNS", "LNS alpha=0")),
        fig3=FIG3,
        # The issue-9 investigation: what makes LNS flip more than fine-tuning?
        flip_sources={
            "fine-tune (reference)": FINE_TUNE,
            "LNS (protocol default: clipped STE, D2)": LNS,
            "LNS alpha=0": LNS_ALPHA0,
            "identity weight STE (the old D2)": _lns({"lns.weight_ste": "identity"}),
            "sum reduction (Eq. 17)": _lns({"lns.reduction": "sum"}),
            "theta lr x 1/N": _lns({"lns.mapping_lr_scale": "1/N"}),
            "theta lr 0 (mapping frozen)": _lns({"lns.mapping_lr_scale": "0"}),
            "sum + theta lr x 1/N": _lns({"lns.reduction": "sum", "lns.mapping_lr_scale": "1/N"}),
            "warm start to 99.5% agreement only": _lns({"lns.warmup_tolerance": 0.0}),
            "labels: pretrained sign(W) (D1)": _lns({"lns.labels": "pretrained"}),
            "l_cls straight to W (D14)": _lns({"lns.cls_grad_to_w": "straight"}),
        },
        # Subsets of the paper's grids (bnnns.experiments.paper): both ends, the paper's optimum
        # and points between, what a 2-core CPU could run in a session. Fig. 5: rho at alpha 1.
        # Fig. 4: alpha at rho 0.005, the headline rho (the paper swept alpha at rho 0.01,
        # method.md §4): its alpha = 1 point is Table 1's LNS row, alpha = 0 its LNS alpha=0.
        sweeps={
            "rho_sweep": Sweep(
                "lns.rho_pos",
                (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
                fixed={"lns.alpha": 1.0},
                tied=("lns.rho_neg",),
            ),
            "alpha_sweep": Sweep(
                "lns.alpha",
                (0.0, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0),
                fixed={"lns.rho_pos": 0.005, "lns.rho_neg": 0.005},
                runs={0.0: "LNSalpha0"},
            ),
        },
        seeds={"ablation": 5, "flip_sources": 1, "flips": 3, "rho_sweep": 3, "alpha_sweep": 3},
    )
)
