"""Input pipeline throughput: the thread pool against grain's worker processes, images/s.

    python -m bnnns.bench.input DIR [--files 2000] [--batch 64] [--batches 20] [--workers 1,2]

``DIR`` is filled (once) with ``--files`` ImageNet-shaped JPEGs (500x375, quality 90, smooth
random content so they compress like photos). Each train example is then decoded from its file
(Pillow), random-resized-cropped to 224x224 and flipped (``transforms.imagenet_train``, the
ImageNet recipe) and normalised: the per-example CPU work of ``tfds:imagenet2012``. Both loaders
build the very same batches (:mod:`bnnns.data.grain_loader`); for each loader and worker count
one epoch of ``--batch x (--batches + 1)`` files is read: its first batch (start-up: grain
spawns its workers) is timed apart from the steady state of the next ``--batches``, then the
first batch of the next epoch (grain's workers carry on). One JSON line per case, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from bnnns.data import DatasetInfo, Split, batch_iterator
from bnnns.data.grain_loader import close_pools

__all__ = ["JpegColumn", "main", "make_jpegs", "measure"]

SHAPE = (375, 500)  # height, width: ImageNet's typical landscape photo


class JpegColumn:
    """Images decoded from JPEG files when a batch asks for them (picklable: paths only)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty(len(indices), dtype=object)
        for i, j in enumerate(np.asarray(indices)):
            with Image.open(self.paths[int(j)]) as image:
                out[i] = np.asarray(image.convert("RGB"))
        return out


def make_jpegs(directory: str, count: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs of 500x375 in ``directory`` (kept: made once)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = os.path.join(directory, f"{i:05d}.jpg")
        if not os.path.exists(path):
            small = rng.integers(0, 256, size=(SHAPE[0] // 25, SHAPE[1] // 25, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize(SHAPE[::-1], Image.BILINEAR)
            noise = rng.integers(-12, 13, size=(*SHAPE, 3))
            pixels = np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def measure(paths: list[str], loader: str, workers: int, batch: int, batches: int) -> dict:
    """Start-up seconds (first batch), steady images/s over ``batches`` more batches (the rest
    of an epoch of ``batch x (batches + 1)`` files) and the next epoch's first-batch seconds."""
    paths = paths[: batch * (batches + 1)]
    split = Split(JpegColumn(paths), np.zeros(len(paths), np.int32))
    info = DatasetInfo("jpegs", (224, 224, 3), 1, len(paths), 0, "imagenet", mean=(0.5,) * 3)
    common = dict(global_batch_size=batch, seed=0, train=True, num_threads=workers, loader=loader)
    start = time.perf_counter()
    it = batch_iterator(split, info, epoch=0, **common)
    next(it)
    first = time.perf_counter() - start
    start = time.perf_counter()
    done = sum(1 for _ in it)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    it = batch_iterator(split, info, epoch=1, **common)
    next(it)
    next_epoch = time.perf_counter() - start
    del it
    close_pools()  # this case's grain workers end here, not during the next case
    return {
        "loader": loader,
        "workers": workers,
        "batch": batch,
        "batches": done,
        "startup_s": round(first, 3),
        "images_per_s": round(done * batch / seconds, 1),
        "next_epoch_s": round(next_epoch, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bnnns.bench.input", description=__doc__)
    p.add_argument("directory", help="where the JPEGs are (made on the first run)")
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="timed batches after the first")
    p.add_argument("--workers", default="1,2", help="comma-separated thread/worker counts")
    args = p.parse_args(argv)
    needed = args.batch * (args.batches + 1)
    if args.files < needed:
        p.error(f"--files {args.files} < --batch x (--batches + 1) = {needed}")
    paths = make_jpegs(args.directory, args.files)
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        for loader in ("threads", "grain"):
            row = measure(paths, loader, workers, args.batch, args.batches)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| loader | workers | start-up (s) | images/s | next epoch (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['loader']} | {r['workers']} | {r['startup_s']} | {r['images_per_s']} "
            f"| {r['next_epoch_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
