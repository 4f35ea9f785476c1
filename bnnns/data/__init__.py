"""Data loading for bnnns: random-access splits and a deterministic, sharded batch iterator.

Which path reads what:

* ``"mnist"``: the IDX files shipped in ``bnnns/data/mnist_idx`` (or ``data_dir``), gunzipped
  and md5-verified on load, held in memory (:mod:`bnnns.data.mnist`).
* ``"npz:<path>"``: ``x_train, y_train, x_test, y_test`` from one ``.npz``, validated and held
  in memory (:mod:`bnnns.data.npz`).
* ``"folder:<dir>"``: JPEG/PNG files in one folder per class (``train/`` + ``test/``, or one
  tree with a carved test split), decoded once and cached on disk as uint8, held in memory
  (:mod:`bnnns.data.folder`).
* ``"tfds:<name>"``: ``tfds.data_source`` = TF-free random access over the ArrayRecord files
  of a prepared TFDS dataset; images are read and decoded (numpy/PIL) only when a batch asks
  for them, so ImageNet stays on disk. The ``tfds.load``/tf.data fallback is used only when
  the dataset is not prepared as ArrayRecord *and* tensorflow is installed, and only for
  fixed-shape (small) datasets (:mod:`bnnns.data.tfds_source`).

:func:`batch_iterator` shuffles with ``(seed, epoch)``, shards each global batch over
processes, augments with numpy/PIL (:mod:`bnnns.data.transforms`) on a small thread pool with
one batch of prefetch, and pads + masks the last eval batch (:mod:`bnnns.data.pipeline`).
"""

from bnnns.data.loader import load_dataset
from bnnns.data.pipeline import batch_iterator, close_worker_pools, steps_per_epoch
from bnnns.data.split import DatasetInfo, Split

__all__ = [
    "DatasetInfo",
    "Split",
    "batch_iterator",
    "close_worker_pools",
    "load_dataset",
    "steps_per_epoch",
]
