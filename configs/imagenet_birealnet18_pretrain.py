"""ImageNet Bi-Real ResNet-18 + PReLU baseline (method.md §4, §6.4; Table 3: 59.0% top-1).

    python train.py --config configs/imagenet_birealnet18_pretrain.py --workdir runs/in_pretrain

Recipe (§4): 120 epochs, batch 256, SGD momentum 0.9, lr 0.1 x0.1 at epochs 70/90/110,
weight decay 0; random-resized-crop 224 + flip, centre crop for eval. Per-channel scale,
ApproxSign activations, clipped weight STE (Bi-Real). Needs ImageNet prepared for TFDS as
ArrayRecord (`tfds build --file_format=array_record imagenet2012` with the manual download).
"""

from bnnns.train.default_config import imagenet_config


def get_config():
    return imagenet_config(
        "pretrain",
        {"name": "birealnet18", "prelu": True},
        {"weight_scale": "channel", "weight_ste": "clipped", "activation": "approx_sign"},
    )
