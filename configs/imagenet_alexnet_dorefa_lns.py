"""ImageNet DoReFa AlexNet: LNS fine-tuning (method.md §5.3 Table 5: 43.9 -> 44.4% top-1).

    python train.py --config configs/imagenet_alexnet_dorefa_lns.py \
        --workdir runs/in_alexnet_lns --config.init_from=runs/in_alexnet_pretrain

Recipe (§4, Q11): warm start (D7), then 45 epochs, lr 0.01 x0.1 every 15 epochs, SGD momentum
0.9, weight decay 0, batch 256; alpha = 1, rho = 0.005. The binary FC layers fc0/fc1 keep plain
``sign(W)`` in this stage too (method.md Q10: their mapping network would have 72 c^2 = 6.1e9
weights); the mapping networks learn the binary weights of conv1-conv4 only.
"""

from bnnns.train.default_config import imagenet_config


def get_config():
    c = imagenet_config(
        "lns",
        {"name": "alexnet_dorefa"},
        {"weight_scale": "layer", "weight_ste": "identity", "activation": "ste_sign"},
        init_from="runs/in_alexnet_pretrain",
    )
    c.lns.weight_ste = "identity"  # D2
    return c
