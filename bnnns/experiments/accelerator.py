"""The paper's ResNet-20 protocol on an accelerator, in one command (issue 19):

    python -m bnnns.experiments.accelerator --data ../shared/data/cifar10_jpeg/cifar10_jpeg.tar.gz \
        --workdir /tmp/c10 [--pretrain-epochs 20] [--finetune-epochs 5] [--seeds 1]

Unpacks the CIFAR-10 JPEG tarball (or takes an unpacked ``train/``/``test/`` folder), then runs
the ``cifar10_resnet20`` protocol's Table 1 (:mod:`bnnns.experiments.protocols.cifar10`): the
pretrained binary ResNet-20 (the baseline), the float reference, fine-tune, LNS alpha=0 and LNS,
and prints the table (``<workdir>/results/ablation.md``), one ``accelerator`` JSON line with the
device and the wall time of each run. Resumable: rerun the same command. ``--toy`` shrinks it to
seconds on CPU (width 2, 1 epoch, the first images of each class), what CI runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tarfile
import time
from collections.abc import Sequence

from bnnns.experiments import studies
from bnnns.experiments.protocol import Protocol
from bnnns.experiments.protocols.cifar10 import CIFAR10_RESNET20, resnet20_budget

__all__ = ["main", "prepare_data", "toy_folder"]


def prepare_data(data: str, workdir: str) -> str:
    """``data`` as an image folder: a directory as it is, a ``.tar.gz`` unpacked (once) under
    ``workdir/data``; the folder holding ``train/`` and ``test/``."""
    if os.path.isdir(data):
        return data
    if not os.path.isfile(data) or not tarfile.is_tarfile(data):
        raise SystemExit(f"--data {data!r}: neither an image folder nor a tarball")
    target = os.path.join(workdir, "data")
    if not os.path.isdir(os.path.join(target, "train")):
        with tarfile.open(data) as tar:
            tar.extractall(target + ".tmp", filter="data")
        shutil.move(target + ".tmp", target)
    subdirs = [d for d in os.listdir(target) if os.path.isdir(os.path.join(target, d, "train"))]
    return os.path.join(target, subdirs[0]) if subdirs else target


def toy_folder(source: str, target: str, per_class: int = 4) -> str:
    """The first ``per_class`` images of each class of ``source``'s splits, linked into
    ``target`` (a seconds-sized copy for ``--toy``)."""
    for split in ("train", "test"):
        for cls in sorted(os.listdir(os.path.join(source, split))):
            os.makedirs(os.path.join(target, split, cls), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(source, split, cls)))[:per_class]:
                link = os.path.join(target, split, cls, name)
                if not os.path.exists(link):
                    os.symlink(os.path.abspath(os.path.join(source, split, cls, name)), link)
    return target


def _protocol(args: argparse.Namespace, folder: str) -> Protocol:
    budget = resnet20_budget(args.pretrain_epochs, args.finetune_epochs)
    budget["dataset"] = f"folder:{folder}"
    if args.toy:
        budget |= {"model.width": 2, "batch_size": 4, "eval_batch_size": 50}
        budget |= {"lns.warmup_steps": 20}
    return dataclasses.replace(CIFAR10_RESNET20, budget=budget)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the protocol the command line names; return the ``accelerator`` line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the CIFAR-10 JPEG tarball or folder")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--pretrain-epochs", type=float, default=20)
    parser.add_argument("--finetune-epochs", type=float, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--toy", action="store_true", help="seconds on CPU (CI)")
    args = parser.parse_args(argv)
    if args.toy:
        args.pretrain_epochs = args.finetune_epochs = 1
    os.makedirs(args.workdir, exist_ok=True)
    start = time.perf_counter()
    folder = prepare_data(args.data, args.workdir)
    if args.toy:
        folder = toy_folder(folder, os.path.join(args.workdir, "toy_data"))
    protocol = _protocol(args, folder)
    out = os.path.join(args.workdir, "results")
    result = studies.ablation(protocol, os.path.join(args.workdir, "runs"), out, args.seeds)
    import jax

    line = {
        "kind": "accelerator",
        "device": str(jax.devices()[0].device_kind),
        "wall_s": round(time.perf_counter() - start, 1),
        "baseline": result["baseline"]["test_accuracy"],
        "float_reference": (result["float_reference"] or {}).get("test_accuracy"),
        "rows": {n: r["per_seed_last"] for n, r in result["rows"].items()},
        "run_s": _run_seconds(os.path.join(args.workdir, "runs")),
    }
    with open(os.path.join(out, "ablation.md")) as f:
        print(f.read())
    print(json.dumps(line), flush=True)
    return line


def _run_seconds(root: str) -> dict[str, float]:
    """Each finished run's training seconds, from its summary."""
    seconds = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                stages = json.load(f)["stages"]
            seconds[name] = round(sum(s.get("seconds", 0.0) for s in stages), 1)
    return seconds


if __name__ == "__main__":
    main()
