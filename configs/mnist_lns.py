"""Default pipeline: pretrain a small binary CNN on MNIST, then fine-tune it with LNS.

    python train.py --config configs/mnist_lns.py --workdir runs/mnist_lns

The paper's optimizer and schedule shape (§4, Q12), scaled to MNIST: SGD, momentum 0.9, weight
decay 0, batch 128. Pretrain 12 epochs at lr 0.05, cosine to 0 (at 0.1 this width-16 CNN's
loss reached 39 in its first epoch: the real head sees 3136 features; 8 epochs ended at 97.2%,
at lr 0.05 and at 0.02); LNS: converged warm start of
the mapping networks (D7), then 2 epochs at the paper's fine-tuning lr 0.01, x0.1 at 1/4, 1/2
and 3/4 of the budget (the paper's 30/60/90 of 120 epochs), alpha 1, rho 0.005, the mean
auxiliary loss (D3), the clipped weight STE on q^ (D2). Measured accuracies: README.
"""

from bnnns.train.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "mnist"
    c.stages = "pretrain,lns"
    c.model.name = "cnn"
    c.model.width = 16
    c.batch_size = 128
    sgd = dict(optimizer="sgd", momentum=0.9, weight_decay=0.0)
    c.pretrain.update(epochs=12, learning_rate=0.05, schedule="cosine", **sgd)
    fine_tune = dict(
        epochs=2, learning_rate=0.01, schedule="step", decay_epochs=(0.5, 1.0, 1.5), **sgd
    )
    c.finetune.update(fine_tune)
    c.lns.update(fine_tune)
    return c
