"""Default pipeline: pretrain a small binary CNN on MNIST, then fine-tune it with LNS.

    python train.py --config configs/mnist_lns.py --workdir runs/mnist_lns

Expected on a 2-core CPU: about 8 minutes; test accuracy about 99% (see README).
"""

from bnnns.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "mnist"
    c.stages = "pretrain,lns"
    c.model.name = "cnn"
    c.model.width = 16
    c.batch_size = 128
    c.pretrain.update(epochs=4, optimizer="adam", learning_rate=2e-3, schedule="cosine")
    c.finetune.update(epochs=2, optimizer="sgd", learning_rate=0.01, schedule="cosine")
    c.lns.update(epochs=2, optimizer="sgd", learning_rate=0.01, schedule="cosine", decay_epochs=())
    c.lns.warmup_steps = 1000
    return c
