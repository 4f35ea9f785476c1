"""MNIST protocol of the ablation experiments (``python -m bnnns.experiments ...``).

A binary CNN of width 8 (97-99% test accuracy: binarization costs accuracy), 10% of the
training set held out for validation. Pretrain: 6 epochs of Adam (lr 2e-3, cosine). Fine-tune
(fine-tune, LNS alpha=0, LNS): the paper's protocol scaled down (§4: 120 epochs at a tenth of
the pretrain lr, x0.1 every 30 epochs) to 3 epochs of Adam at lr 2e-4 (a tenth of the pretrain
lr), x0.1 after epochs 1 and 2. Adam instead of SGD because SGD at lr 0.01 diverges on the
summed auxiliary loss (D3) on this model (see RESULTS.md).
"""

from bnnns.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "mnist"
    c.validation_fraction = 0.1
    c.stages = "pretrain"
    c.model.update(name="cnn", width=8)
    c.batch_size = 128
    c.eval_batch_size = 2000
    c.pretrain.update(epochs=6, optimizer="adam", learning_rate=2e-3, schedule="cosine")
    fine_tune = dict(
        epochs=3,
        optimizer="adam",
        learning_rate=2e-4,
        schedule="step",
        decay_epochs=(1, 2),
        decay_factor=0.1,
    )
    c.finetune.update(fine_tune)
    c.lns.update(fine_tune)
    c.lns.update(alpha=1.0, rho_pos=0.005, rho_neg=0.005, reduction="mean", warmup_steps=2000)
    c.progress_bar = False
    return c
