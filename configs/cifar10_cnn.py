"""CIFAR-10 protocol (``python -m bnnns.experiments ... --protocol cifar10``; RESULTS.md): the
paper's Table 1 and Figs. 3 on real CIFAR-10 images, at a size a 2-core CPU trains in hours.

    python train.py --config configs/cifar10_cnn.py --config.dataset=folder:DIR --workdir W

``DIR`` holds ``train/`` and ``test/`` class folders (the unpacked
``../shared/data/cifar10_jpeg`` tarball, JPEG quality 75: not CIFAR-10's own numbers). The
binary CNN of width 16 (``configs/mnist_lns.py``'s model: real stem and head, three binary
3x3 convs), where binarization costs far more than 5 points against the same network in float
(``binary.weight_binarizer="real"``, ``binary.activation="relu"``; RESULTS.md). 10% of the
training images are held out for validation, the same split for every seed
(``validation_seed = 0``); the test set only reports. The paper's CIFAR recipe (§4, Q12) scaled
down: SGD, momentum 0.9, weight decay 0, batch 128, pad-4 crop + flip.

- Pretrain: 10 epochs at lr 0.05, cosine to 0 (lr 0.05 as the MNIST CNN of this width).
- Fine-tuning, the same budget for every row (fine-tune, LNS alpha=0, LNS): 3 epochs at the
  paper's lr 0.01, x0.1 after 0.75, 1.5 and 2.25 epochs (the paper's 30/60/90 of 120 epochs).
  LNS: converged warm start (D7), then alpha = 1, rho = 0.005, mean reduction (D3), clipped
  weight STE (D2).
"""

from bnnns.train.default_config import base_config


def get_config():
    c = base_config()
    c.dataset = "folder:/path/to/cifar10_jpeg"  # set with --config.dataset=folder:DIR
    c.augment = "cifar"
    c.validation_fraction = 0.1
    c.validation_seed = 0
    c.stages = "pretrain"
    c.model.update(name="cnn", width=16)
    c.batch_size = 128
    c.eval_batch_size = 1000
    sgd = dict(optimizer="sgd", momentum=0.9, weight_decay=0.0)
    c.pretrain.update(epochs=10, learning_rate=0.05, schedule="cosine", **sgd)
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
