"""ImageNet ResNet-18 DoReFa: LNS fine-tuning (method.md §5.2 Table 4: 52.5 -> 53.1% top-1).

    python train.py --config configs/imagenet_resnet18_dorefa_lns.py \
        --workdir runs/in_resnet18_lns --config.init_from=runs/in_resnet18_pretrain

Recipe (§4, Q11): warm start (D7), then 45 epochs, lr 0.01 x0.1 every 15 epochs, SGD momentum
0.9, weight decay 0, batch 256; alpha = 1, rho = 0.005 (CIFAR values, Q11). Table 4's text
says 60 epochs for this ablation (§4 warning): set ``--config.lns.epochs=60
--config.lns.decay_epochs='(20,40)'`` to follow it.
"""

from bnnns.train.default_config import imagenet_config


def get_config():
    c = imagenet_config(
        "lns",
        {"name": "resnet18_dorefa"},
        {"weight_scale": "layer", "weight_ste": "identity", "activation": "ste_sign"},
        init_from="runs/in_resnet18_pretrain",
    )
    c.lns.weight_ste = "identity"  # D2
    return c
