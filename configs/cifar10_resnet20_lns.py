"""CIFAR-10 ResNet-20: LNS fine-tuning of the pretrained BNN (Table 1's headline row).

    python train.py --config configs/cifar10_resnet20_lns.py --workdir runs/c10_lns \
        --config.init_from=runs/c10_pretrain

Recipe (§4, Part A): warm start of the mapping networks until the auxiliary loss has converged
(D7), then 120 epochs of SGD momentum 0.9, lr 0.01, x0.1 at epochs 30/60/90, batch 128; alpha = 1,
rho = 0.005 (D4), the mean auxiliary loss (D3), labels sign(W) of the current weights (D1), the
clipped weight STE on q^ (D2). Paper: 85.78 (85.56 +- 0.11).

With the sum of Eq. 17 instead of the mean, SGD at lr 0.01 diverged on MNIST and, on mock data,
on this recipe (non-finite by step 5; RESULTS.md). Check a variant before a long run (CI runs
this in tests/test_stability.py):

    python -m bnnns.bench.stability --config configs/cifar10_resnet20_lns.py \
        --pretrain-config configs/cifar10_resnet20_pretrain.py --alphas 1 5 --reductions mean sum
"""

from bnnns.train.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "tfds:cifar10"
    c.stages = "lns"
    c.init_from = "runs/c10_pretrain"
    c.model.update(name="resnet20", block="birealish", shortcut="A", width=16)
    c.binary.update(weight_scale="layer", weight_ste="identity", activation="ste_sign")
    c.batch_size = 128
    c.lns.update(
        epochs=120,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        schedule="step",
        decay_epochs=(30, 60, 90),
        decay_factor=0.1,
        alpha=1.0,
        rho_pos=0.005,
        rho_neg=0.005,
        reduction="mean",
    )
    return c
