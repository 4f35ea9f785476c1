"""Small configs for fast training tests."""

from bnnns.train.default_config import base_config


def tiny_config(**overrides):
    """A seconds-long MNIST pipeline: width-4 CNN, 512 training images, batch 64."""
    c = base_config()
    c.dataset = "mnist"
    c.stages = "pretrain,lns"
    c.model.update(name="cnn", width=4)
    c.train_subset = 512
    c.batch_size = 64
    c.eval_batch_size = 2000
    c.pretrain.update(epochs=2, optimizer="adam", learning_rate=2e-3, schedule="cosine")
    c.finetune.update(epochs=1, optimizer="adam", learning_rate=1e-4, schedule="cosine")
    c.lns.update(epochs=2, optimizer="adam", learning_rate=1e-4, schedule="cosine", decay_epochs=())
    c.lns.warmup_steps = 400
    c.progress_bar = False
    c.log_every_steps = 4
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c
