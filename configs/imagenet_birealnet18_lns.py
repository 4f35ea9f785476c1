"""ImageNet Bi-Real ResNet-18 + PReLU: LNS fine-tuning (Table 3: 59.4% top-1).

    python train.py --config configs/imagenet_birealnet18_lns.py --workdir runs/in_lns \
        --config.init_from=runs/in_pretrain

Recipe (§4, Q11): warm start (D7), then 45 epochs, lr 0.01 x0.1 every 15 epochs, SGD momentum
0.9, batch 256; alpha = 1, rho = 0.005 (not given for ImageNet; CIFAR values, Q11).
"""

from bnnns.train.default_config import imagenet_config


def get_config():
    c = imagenet_config(
        "lns",
        {"name": "birealnet18", "prelu": True},
        {"weight_scale": "channel", "weight_ste": "clipped", "activation": "approx_sign"},
        init_from="runs/in_pretrain",
    )
    c.lns.weight_ste = "clipped"  # D2
    return c
