"""ImageNet DoReFa AlexNet: LNS fine-tuning (method.md §5.3 Table 5: 43.9 -> 44.4% top-1).

    python train.py --config configs/imagenet_alexnet_dorefa_lns.py \
        --workdir runs/in_alexnet_lns --config.init_from=runs/in_alexnet_pretrain

Recipe (§4, Q11): warm start (D7), then 45 epochs, lr 0.01 x0.1 every 15 epochs, SGD momentum
0.9, weight decay 0, batch 256; alpha = 1, rho = 0.005. The binary FC layers fc0/fc1 keep plain
``sign(W)`` in this stage too (method.md Q10: their mapping network would have 72 c^2 = 6.1e9
weights); the mapping networks learn the binary weights of conv1-conv4 only.
"""

from bnnns.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "tfds:imagenet2012"
    c.stages = "lns"
    c.init_from = "runs/in_alexnet_pretrain"
    c.image_size = 224
    c.model.update(name="alexnet_dorefa")
    c.binary.update(weight_scale="layer", weight_ste="identity", activation="ste_sign")
    c.batch_size = 256
    c.eval_batch_size = 500
    c.data_threads = 16
    c.lns.update(
        epochs=45,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=0.0,
        schedule="step",
        decay_epochs=(15, 30),
        decay_factor=0.1,
        alpha=1.0,
        rho_pos=0.005,
        rho_neg=0.005,
        weight_ste="identity",
    )  # D2
    c.checkpoint_every_steps = 2000
    return c
