"""Default pipeline: pretrain a small binary CNN on MNIST, then fine-tune it with LNS.

    python train.py --config configs/mnist_lns.py --workdir runs/mnist_lns

Measured on a 2-core CPU (shared): 10.5 minutes; pretrain 98.07%, LNS 97.89% test accuracy.
"""

from bnnns.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "mnist"
    c.stages = "pretrain,lns"
    c.model.name = "cnn"
    c.model.width = 16
    c.batch_size = 128
    c.pretrain.update(epochs=6, optimizer="adam", learning_rate=2e-3, schedule="cosine")
    # Fine-tuning with Adam: with the sum reduction of Eq. 17 (D3) the auxiliary gradients are
    # ~1e3x the classification ones, and SGD at the paper's lr 0.01 diverges on this model
    # (measured, see README); Adam's per-parameter step size is insensitive to that scale.
    c.finetune.update(epochs=2, optimizer="adam", learning_rate=5e-5, schedule="cosine")
    c.lns.update(epochs=2, optimizer="adam", learning_rate=5e-5, schedule="cosine", decay_epochs=())
    c.lns.warmup_steps = 1000
    return c
