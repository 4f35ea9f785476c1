"""Test accuracy of a deployed ``.bnn`` artifact on a dataset, mapping-free.

    python -m bnnns.deploy.predict model.bnn --dataset mnist [--json]

``--dataset`` takes any ``config.dataset`` form (``mnist``, ``npz:<path>``, ``tfds:<name>``,
``folder:<dir>``; default: the dataset the model was trained on). Images are preprocessed as in
training: the artifact's input size and normalisation (the training split's statistics), so the
accuracy equals the run's final test accuracy. ``--json`` prints
``{"accuracy": ..., "count": ...}``; ``--save-logits out.npy`` also writes every image's logits.
``--kernel`` chooses the binary layers' kernel (``auto``: XNOR-popcount on packed bits on CPU
when the native kernel builds, else ``int8``; :func:`bnnns.deploy.inference.choose_kernel`);
the one used and why is printed to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from bnnns import data as data_lib
from bnnns.deploy import artifact as artifact_lib
from bnnns.deploy.inference import KERNELS, choose_kernel, predict

__all__ = ["evaluate", "main"]


def evaluate(
    art: artifact_lib.Artifact,
    dataset: str | None = None,
    *,
    data_dir: str | None = None,
    batch_size: int = 1000,
    split: str = "test",
    logits_out: list | None = None,
    kernel: str = "auto",
) -> dict[str, float]:
    """``{"accuracy", "count"}`` of ``art`` on ``split`` of ``dataset`` (default: its own).

    ``logits_out``: a list that receives the logits of every image, in dataset order.
    ``kernel``: as :func:`bnnns.deploy.inference.predict`.
    """
    dataset = dataset or art.header["dataset"]
    shape = tuple(art.header["input_shape"])
    try:  # variable-size (ImageNet-style) data sets are resized to the model's input
        splits, info = data_lib.load_dataset(dataset, data_dir=data_dir, image_size=shape[0])
    except ValueError as e:
        if "image_size" not in str(e):
            raise
        splits, info = data_lib.load_dataset(dataset, data_dir=data_dir)  # fixed size: below
    if tuple(info.image_shape) != shape:
        raise ValueError(
            f"dataset {dataset!r} has images of shape {tuple(info.image_shape)}, the model "
            f"takes {shape}"
        )
    norm = art.header["normalization"]
    info = dataclasses.replace(info, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    correct, count = 0.0, 0.0
    batches = data_lib.batch_iterator(
        splits[split], info, global_batch_size=batch_size, seed=0, epoch=0, train=False
    )
    for batch in batches:
        logits = np.asarray(predict(art, batch["image"], kernel))
        if logits_out is not None:
            logits_out.append(logits[batch["mask"] > 0])
        hit = (np.argmax(logits, -1) == batch["label"]).astype(np.float64)
        correct += float(np.sum(hit * batch["mask"]))
        count += float(np.sum(batch["mask"]))
    return {"accuracy": correct / max(count, 1.0), "count": int(count)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bnnns.deploy.predict", description=__doc__.split("\n")[0]
    )
    p.add_argument("artifact", help="a .bnn file written by python -m bnnns.deploy.export")
    p.add_argument(
        "--dataset", default=None, help="mnist | npz:<path> | tfds:<name> | folder:<dir>"
    )
    p.add_argument("--data-dir", default=None, help="as config.data_dir")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--json", action="store_true", help='print {"accuracy": ..., "count": ...}')
    p.add_argument("--save-logits", default=None, help="write the logits to this .npy file")
    p.add_argument("--kernel", default="auto", choices=KERNELS, help="binary layers' kernel")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    logits_dir = os.path.dirname(os.path.abspath(args.save_logits or "."))
    if args.save_logits and not os.path.isdir(logits_dir):  # before minutes of evaluation
        print(
            f"error: --save-logits {args.save_logits}: folder {logits_dir} does not exist",
            file=sys.stderr,
        )
        return 2
    logits: list = []
    try:
        art = artifact_lib.read(args.artifact)
        kernel, why = choose_kernel(args.kernel)
        print(f"kernel: {kernel}: {why}", file=sys.stderr)
        result = evaluate(
            art,
            args.dataset,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            logits_out=logits,
            kernel=kernel,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.save_logits:
        try:
            np.save(args.save_logits, np.concatenate(logits))
        except OSError as e:
            print(f"error: --save-logits {args.save_logits}: {e.strerror or e}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy {result['accuracy']:.4f} ({result['count']} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
