"""The defaults every experiment config starts from (``configs/*.py`` override them)."""

from __future__ import annotations

from ml_collections import ConfigDict

from bnnns.core.estimators import DEFAULT_WEIGHT_STE

__all__ = ["base_config", "imagenet_config", "load_config_file", "optimization"]


def optimization(**overrides) -> ConfigDict:
    """One stage's optimization settings (method.md §4)."""
    opt = ConfigDict(
        {
            "epochs": 1.0,
            "optimizer": "sgd",  # "sgd" | "adam" | "bop" (binary kernels; the rest: SGD)
            "bop_tau": 1e-8,  # Bop's threshold (Helwegen et al. 2019, Algorithm 1)
            "bop_gamma": 1e-4,  # Bop's adaptivity rate of the gradient's moving average
            "learning_rate": 0.01,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "step",  # "constant" | "cosine" | "step"
            "decay_epochs": (),
            "decay_factor": 0.1,
            "warmup_epochs": 0.0,
        }
    )
    opt.update(overrides)
    return opt


def base_config() -> ConfigDict:
    """All fields, with the paper's CIFAR-10 LNS settings where they apply (Part A)."""
    c = ConfigDict()
    c.seed = 0
    c.num_seeds = 1  # > 1: seeds seed .. seed + num_seeds - 1 in one program (bnnns.train.seeds)
    c.stages = "pretrain,lns"  # comma-separated, from pretrain | finetune | lns
    c.init_from = ""  # workdir of a run with a pretrain stage (when stages has no pretrain)
    # Data: "mnist" | "tfds:<name>" | "npz:<path>" | "folder:<dir>".
    c.dataset = "mnist"
    c.data_dir = ""
    c.validation_fraction = 0.0
    c.validation_seed = -1  # seed of the validation carve; -1 = config.seed
    c.augment = ""  # training augmentation: "" = the data set's own | "none" | "cifar"
    c.train_subset = 0  # 0 = all
    c.eval_subset = 0  # the first N test and validation images only (quick runs); 0 = all
    c.image_size = 0  # 0 = the data set's default (ImageNet: 224)
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.data_threads = 2  # threads, or with data_loader "grain" worker processes
    c.data_loader = "threads"  # "threads" | "grain" (bnnns.data.grain_loader): the same batches
    # Model: name plus its keyword arguments; dtype is the compute dtype.
    c.model = ConfigDict({"name": "cnn", "dtype": "float32"})
    # Binarization shared by all stages (D8, D9).
    c.binary = ConfigDict(
        {
            # pretrain/finetune weights: "sign" (binary) | "real" (the float reference model,
            # with activation "relu"); the lns stage always binarizes through the mapping (D2)
            "weight_binarizer": "sign",
            "weight_scale": "layer",  # D8: "none" | "layer" | "channel"
            # STE of sign(W) in pretrain/finetune: "identity" | "clipped" | "clip_grad" |
            # "ede" (IR-Net's EDE, its (t, k) from the stage's progress step / total steps)
            "weight_ste": DEFAULT_WEIGHT_STE["sign"],
            "weight_clip": 1.0,
            # D9: "ste_sign" | "approx_sign" | "none" | "relu"; also "swish_sign" (Larq),
            # "ede_sign" (IR-Net's EDE, scheduled over each stage) | "rsign" (ReActNet)
            "activation": "ste_sign",
            "act_clip": 1.0,
            "swish_beta": 5.0,  # SwishSign's beta (activation "swish_sign"), > 0
        }
    )
    # The LNS stage (D1-D7) and its optimization.
    c.lns = optimization(epochs=120, learning_rate=0.01, decay_epochs=(30, 60, 90))
    c.lns.update(
        {
            "alpha": 1.0,  # Eq. 21 (D4)
            "rho_pos": 0.005,  # Eq. 8 (D4)
            "rho_neg": 0.005,  # Eq. 9 (D4)
            "labels": "current",  # D1: "current" | "pretrained"
            # D2 (revised after measurement, docs/method.md): "clipped" (Eq. 3's STE on q^:
            # the gradient passes where |q^| <= 1) | "identity" (DoReFa; the old default) |
            # "clip_grad" | "ede" (IR-Net's EDE on q^, scheduled over the stage)
            "weight_ste": DEFAULT_WEIGHT_STE["lns"],  # "clipped", as the layers' default
            "reduction": "mean",  # D3: "mean" (Eq. 16, default) | "sum" (Eq. 17)
            "residual": False,  # D6 option
            # D14: how l_cls's gradient reaches W: "mapping" (chain rule through f_theta) or
            # "straight" (dl_cls/dQ^ straight to W, Eq. 3; theta still gets it via f_theta).
            "cls_grad_to_w": "mapping",
            "mapping_dtype": "float32",  # mapping nets' compute dtype: "float32" | "bfloat16"
            "warmup_steps": 5000,  # D7 step cap (Adam steps on theta only)
            "warmup_target": 0.995,  # D7 per-layer agreement target (a floor, not the stop)
            "warmup_tolerance": 0.01,  # D7 convergence: relative excess-loss drop per check
            "warmup_lr": 1e-3,
            # Learning-rate multiplier of theta relative to W, as a string: "1" (Algorithm 1
            # line 13, one eta), any number ("0.1"), or "1/N" (per layer, N = the binarized
            # kernel's element count).
            "mapping_lr_scale": "1",
        }
    )
    c.pretrain = optimization(epochs=400, learning_rate=0.1, schedule="cosine")
    c.finetune = optimization(epochs=120, learning_rate=0.01, decay_epochs=(30, 60, 90))
    # Running.
    c.log_every_steps = 50
    c.checkpoint_every_steps = 0  # 0 = at the end of every epoch only
    c.checkpoint_every_minutes = 0.0  # also save after this much wall time (0 = off)
    c.progress_bar = True
    c.mesh_shape = (-1,)  # ("data",) mesh over all devices
    c.split_mapping = True  # LNS mapping nets: filters split over the mesh (docs/scaling.md)
    return c


def imagenet_config(stage: str, model: dict, binary: dict, init_from: str = "") -> ConfigDict:
    """The paper's ImageNet recipe (method.md §4, Q11) for one stage of ``model``.

    ``"pretrain"``: 120 epochs, lr 0.1 x0.1 at epochs 70/90/110. ``"lns"``: warm start (D7), then
    45 epochs from ``init_from``, lr 0.01 x0.1 every 15 epochs, alpha = 1, rho = 0.005 (CIFAR
    values, Q11). Both: SGD momentum 0.9, weight decay 0, batch 256, 224x224 crops; ``model``
    and ``binary`` update the config's sections. ``configs/imagenet_*.py`` build on this.
    """
    c = base_config()
    c.dataset = "tfds:imagenet2012"
    c.stages = stage
    c.image_size = 224
    c.model.update(model)
    c.binary.update(binary)
    c.batch_size = 256
    c.eval_batch_size = 500
    c.data_threads = 16
    c.checkpoint_every_steps = 2000
    sgd = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0, "schedule": "step"}
    if stage == "pretrain":
        c.pretrain.update(epochs=120, learning_rate=0.1, decay_epochs=(70, 90, 110), **sgd)
    elif stage == "lns":
        c.init_from = init_from
        c.lns.update(epochs=45, learning_rate=0.01, decay_epochs=(15, 30), decay_factor=0.1, **sgd)
        c.lns.update(alpha=1.0, rho_pos=0.005, rho_neg=0.005)
    else:
        raise ValueError(f"stage must be 'pretrain' or 'lns', got {stage!r}")
    return c


def load_config_file(path: str, overrides: dict | None = None) -> ConfigDict:
    """``get_config()`` of a config file, with ``{"a.b": value}`` overrides applied.

    Example:
        >>> c = load_config_file("configs/mnist_lns.py", {"lns.alpha": 0.5})
        >>> c.lns.alpha
        0.5
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bnnns_config", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"config file {path!r} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config has no field {key!r}")
        node[leaf] = value
    return config
