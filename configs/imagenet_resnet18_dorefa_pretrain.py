"""ImageNet ResNet-18 with DoReFa binarization, baseline (method.md §4; Tables 3-4: 52.5% top-1).

    python train.py --config configs/imagenet_resnet18_dorefa_pretrain.py \
        --workdir runs/in_resnet18_pretrain

Recipe (§4): 120 epochs, batch 256, SGD momentum 0.9, lr 0.1 x0.1 at epochs 70/90/110, weight
decay 0; random-resized-crop 224 + flip, centre crop for eval. DoReFa binarization (§6.2):
layer-wise stop-gradient ``mean|W|`` scale, identity weight STE; activations ``sign`` with the
clipped STE (Q9). First conv, last FC and the downsample 1x1 convs stay real (Table 3). Needs
ImageNet prepared for TFDS as ArrayRecord.
"""

from bnnns.train.default_config import imagenet_config


def get_config():
    return imagenet_config(
        "pretrain",
        {"name": "resnet18_dorefa"},
        {"weight_scale": "layer", "weight_ste": "identity", "activation": "ste_sign"},
    )
