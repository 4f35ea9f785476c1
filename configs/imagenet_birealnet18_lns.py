"""ImageNet Bi-Real ResNet-18 + PReLU: LNS fine-tuning (Table 3: 59.4% top-1).

    python train.py --config configs/imagenet_birealnet18_lns.py --workdir runs/in_lns \
        --config.init_from=runs/in_pretrain

Recipe (§4, Q11): warm start (D7), then 45 epochs, lr 0.01 x0.1 every 15 epochs, SGD momentum
0.9, batch 256; alpha = 1, rho = 0.005 (not given for ImageNet; CIFAR values, Q11).
"""

from bnnns.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "tfds:imagenet2012"
    c.stages = "lns"
    c.init_from = "runs/in_pretrain"
    c.image_size = 224
    c.model.update(name="birealnet18", prelu=True)
    c.binary.update(weight_scale="channel", weight_ste="clipped", activation="approx_sign")
    c.batch_size = 256
    c.eval_batch_size = 500
    c.data_threads = 16
    c.lns.update(
        epochs=45,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        schedule="step",
        decay_epochs=(15, 30),
        decay_factor=0.1,
        alpha=1.0,
        rho_pos=0.005,
        rho_neg=0.005,
        weight_ste="clipped",
    )  # D2
    c.checkpoint_every_steps = 2000
    return c
