"""ImageNet DoReFa AlexNet baseline (method.md §4, §6.2; Table 5: 43.9% top-1, 180 Mbit).

    python train.py --config configs/imagenet_alexnet_dorefa_pretrain.py \
        --workdir runs/in_alexnet_pretrain

Recipe (§4): 120 epochs, batch 256, SGD momentum 0.9, lr 0.1 x0.1 at epochs 70/90/110, weight
decay 0; random-resized-crop 224 + flip, centre crop for eval. DoReFa binarization with "only
layer-wise scale factor" (§5.3): ``mean|W|`` per layer, identity weight STE, ``sign``
activations with the clipped STE (Q9). conv0 and fct real; conv1-4, fc0, fc1 binary (§6.2).
"""

from bnnns.train.default_config import imagenet_config


def get_config():
    return imagenet_config(
        "pretrain",
        {"name": "alexnet_dorefa"},
        {"weight_scale": "layer", "weight_ste": "identity", "activation": "ste_sign"},
    )
