"""CIFAR-10 ResNet-20: plain fine-tuning of the pretrained BNN, the control of Table 1.

    python train.py --config configs/cifar10_resnet20_finetune.py --workdir runs/c10_ft \
        --config.init_from=runs/c10_pretrain

Recipe (§4): 120 epochs, SGD momentum 0.9, lr 0.01, x0.1 at epochs 30/60/90, batch 128.
Paper: 85.32 (85.26 +- 0.06).
"""

from bnnns.train.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "tfds:cifar10"
    c.stages = "finetune"
    c.init_from = "runs/c10_pretrain"
    c.model.update(name="resnet20", block="birealish", shortcut="A", width=16)
    c.binary.update(weight_scale="layer", weight_ste="identity", activation="ste_sign")
    c.batch_size = 128
    c.finetune.update(
        epochs=120,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        schedule="step",
        decay_epochs=(30, 60, 90),
        decay_factor=0.1,
    )
    return c
