"""CIFAR-10 binary ResNet-20 baseline (DoReFa 1W1A), trained from scratch (method.md §4, §5.1).

    python train.py --config configs/cifar10_resnet20_pretrain.py --workdir runs/c10_pretrain

Recipe: 400 epochs, batch 128, SGD momentum 0.9, lr 0.1, cosine (INFERRED, §4), weight decay 0;
pad-4 crop + flip. Needs `tfds build --file_format=array_record cifar10` beforehand. The paper's
baseline reaches 85.06% (Table 1). Not run here (no CIFAR-10 offline).
"""

from bnnns.train.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "tfds:cifar10"
    c.stages = "pretrain"
    c.model.update(name="resnet20", block="birealish", shortcut="A", width=16)
    c.binary.update(weight_scale="layer", weight_ste="identity", activation="ste_sign")
    c.batch_size = 128
    c.pretrain.update(
        epochs=400,
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        schedule="cosine",
    )
    return c
