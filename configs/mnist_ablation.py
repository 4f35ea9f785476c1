"""MNIST protocol of the ablation experiments (``python -m bnnns.experiments ...``).

A binary CNN of width 8 (binarization costs 1-3 points on MNIST), 10% of the training set held
out for validation (choices), the test set for reporting only. The paper's optimizer throughout
(§4, Q12): SGD, momentum 0.9, weight decay 0, batch 128.

- Pretrain: 15 epochs at lr 0.1, cosine to 0 (the paper's CIFAR baseline recipe, scaled down;
  long enough that the last epoch's train loss and flip rate have levelled off).
- Fine-tuning, the same budget for every row (fine-tune, LNS alpha=0, LNS): 3 epochs at a tenth
  of the pretrain lr (0.01, the paper's), x0.1 after 0.75, 1.5 and 2.25 epochs (the paper's x0.1
  at 30/60/90 of 120 epochs: 1/4, 1/2, 3/4 of the budget). LNS: converged warm start (D7), then
  alpha = 1, rho = 0.005, mean reduction (D3).
"""

from bnnns.train.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "mnist"
    c.validation_fraction = 0.1
    c.stages = "pretrain"
    c.model.update(name="cnn", width=8)
    c.batch_size = 128
    c.eval_batch_size = 2000
    sgd = dict(optimizer="sgd", momentum=0.9, weight_decay=0.0)
    c.pretrain.update(epochs=15, learning_rate=0.1, schedule="cosine", **sgd)
    fine_tune = dict(
        epochs=3,
        learning_rate=0.01,
        schedule="step",
        decay_epochs=(0.75, 1.5, 2.25),
        decay_factor=0.1,
        **sgd,
    )
    c.finetune.update(fine_tune)
    c.lns.update(fine_tune)
    c.lns.update(alpha=1.0, rho_pos=0.005, rho_neg=0.005, reduction="mean")
    c.progress_bar = False
    return c
