"""Images in one folder per class: the ``folder:<dir>`` data source.

Layouts of ``<dir>``:

* **Two splits**: ``<dir>/train/<class>/*`` and ``<dir>/test/<class>/*``. Both must have the
  same class folders. Other folders beside ``train/`` and ``test/`` (e.g. ``val/``) are not read.
* **One tree**: ``<dir>/<class>/*`` (no ``train/`` or ``test/`` folder). The test split is carved
  from it, fixed and seed-independent: in each class, the ``max(1, round(TEST_FRACTION * n))``
  files whose SHA-256 of ``"<class>/<file name>"`` is smallest (so each class needs >= 2 images).
  The same files are test images in every run, whatever ``config.seed``; adding an image to a
  class moves at most one other file of that class across the boundary. ``validation_fraction``
  then carves the validation split from the remaining training images, as for any data set.
  ``<dir>`` with only one of ``train/`` and ``test/`` is refused (it is neither layout).

Rules:

* Images are ``.jpg``, ``.jpeg`` and ``.png`` files (extension in any case), read with Pillow
  (JPEG and PNG decoders only: a file whose content is neither is undecodable). Any other file
  in a class folder, and any folder in a class folder, is refused with a
  :class:`~bnnns.errors.DataError` naming it: a data set is exactly the files it shows. Names
  starting with ``.`` (``.DS_Store``, the cache folder) are skipped everywhere, and plain files
  beside the class folders (a ``README``) are not read.
* Class index = position of the class folder's name in the sorted list of names (Python string
  order, as torchvision's ``ImageFolder``); images in a class are in the sorted order of their
  file names, classes one after another. EXIF orientation is not applied.
* Channels: if every image of both splits is grayscale (Pillow mode ``1``, ``L`` or ``LA``) the
  data set is ``H x W x 1``; otherwise every image is converted to RGB (grayscale ones by
  repeating the channel, alpha dropped, palettes expanded) and the data set is ``H x W x 3``.
  16-bit and float images (modes ``I``, ``I;16``, ``F``) are refused.
* Every image must have the same ``H x W``; nothing is resized. Mixed sizes are refused, naming
  one file of each size: resize the files first.
* Decoded once (a thread pool; a progress bar from 1,000 files on) into uint8 arrays held in
  memory, and cached on disk (:mod:`bnnns.data.folder_cache`): later runs read the cache, which is
  rebuilt when any image file is added, removed, renamed or modified (name, size or mtime).
* ``mean``/``std`` are computed from the training split after the validation carve
  (:func:`bnnns.data.load_dataset`), and no augmentation is applied (``augment="none"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bnnns.data import folder_cache
from bnnns.errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png")
TEST_FRACTION = 0.2  # one-tree layout: share of each class carved as the test split
PROGRESS_MIN_FILES = 1000  # fewer files decode without a progress bar
GRAYSCALE_MODES = frozenset({"1", "L", "LA"})
_FORMATS = ("JPEG", "PNG")  # Pillow's JPEG opener also takes multi-picture (MPO) camera files
_CHUNK = 256  # files per thread-pool task


@dataclasses.dataclass(frozen=True)
class Tree:
    """What a scan of ``<dir>`` found, before any image is decoded.

    Attributes:
        root: The folder.
        layout: ``"two splits"`` or ``"one tree"``.
        classes: Class folder names, in label order.
        files: ``split -> [(path relative to root, label)]``; ``"train"`` and ``"test"`` for two
            splits, ``"all"`` for one tree.
        stats: ``(relative path, size, mtime_ns)`` of every file, in the order of ``files``.
        test_files: One tree: the relative paths carved as the test split; else empty.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    files: dict[str, list[tuple[str, int]]]
    stats: list[tuple[str, int, int]]
    test_files: frozenset[str] = frozenset()

    def labels(self) -> dict[str, np.ndarray]:
        """``split -> int32 labels`` in file order."""
        return {s: np.asarray([y for _, y in f], dtype=np.int32) for s, f in self.files.items()}


def _visible(folder: Path) -> list[os.DirEntry]:
    """Entries of ``folder`` whose names do not start with ``.``, sorted by name."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _class_folders(root: Path, split: str) -> dict[str, list[tuple[str, int, int]]]:
    """``class -> [(path relative to root, size, mtime_ns)]`` of the class folders in
    ``root/split`` (``split`` ``""`` for one tree)."""
    folder = root / split if split else root
    prefix = f"{split}/" if split else ""
    classes = [e for e in _visible(folder) if e.is_dir()]
    if not classes:
        raise DataError(
            f"{folder}: no class folders; expected one folder per class holding "
            f"{'/'.join(EXTENSIONS)} images (or train/ and test/ folders of such class folders)."
        )
    out, refused = {}, []
    for entry in classes:
        images = []
        for item in _visible(Path(entry.path)):
            rel = f"{prefix}{entry.name}/{item.name}"
            if item.is_dir():
                raise DataError(
                    f"{item.path}: a folder inside class folder {entry.name!r}; images must sit "
                    "directly in their class folder (classes are one level deep)."
                )
            if os.path.splitext(item.name)[1].lower() not in EXTENSIONS:
                refused.append(rel)
                continue
            st = item.stat()
            images.append((rel, st.st_size, st.st_mtime_ns))
        if not images and not refused:
            raise DataError(f"{entry.path}: class folder {entry.name!r} holds no images.")
        out[entry.name] = images
    if refused:
        raise DataError(
            f"{root / refused[0]}: unsupported file type ({len(refused)} such file(s) in "
            f"{folder}); class folders may hold only {', '.join(EXTENSIONS)} images (any case): "
            "move other files out or convert them."
        )
    return out


def _carve_test(per_class: dict[str, list[tuple[str, int, int]]], root: Path) -> frozenset[str]:
    """Relative paths of the test files of a one-tree layout (module docstring)."""
    test = set()
    for name, files in per_class.items():
        if len(files) < 2:
            raise DataError(
                f"{root / name}: class folder {name!r} has {len(files)} image; a one-tree folder "
                "needs >= 2 images per class to carve a test split (or give train/ and test/)."
            )
        num_test = max(1, round(TEST_FRACTION * len(files)))
        order = sorted(files, key=lambda f: hashlib.sha256(_class_and_name(f[0])).digest())
        test.update(f[0] for f in order[:num_test])
    return frozenset(test)


def _class_and_name(rel: str) -> bytes:
    """``"<class>/<file name>"`` of a relative path (the carve hashes this, not the root)."""
    parts = Path(rel).parts
    return "/".join(parts[-2:]).encode("utf-8", "surrogateescape")


def scan(path: str | os.PathLike) -> Tree:
    """Finds the layout, classes and image files of ``path`` (module docstring); decodes nothing.

    Raises:
        DataError: Missing folder, no class folders, an empty class, a file of another type, a
            nested folder, train/ and test/ with different classes, or only one of them.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}.")
    top = {e.name for e in _visible(root) if e.is_dir()}
    splits = [s for s in ("train", "test") if s in top]
    if len(splits) == 1:
        missing = ({"train", "test"} - set(splits)).pop()
        raise DataError(
            f"{root}: has {splits[0]}/ but no {missing}/: the two-split layout needs both "
            f"{root}/train/<class>/ and {root}/test/<class>/; for one tree of class folders, name "
            "the folder holding them (a test split is then carved from it)."
        )
    if splits:
        per_split = {s: _class_folders(root, s) for s in splits}
        names = {s: set(per_split[s]) for s in splits}
        if names["train"] != names["test"]:
            only_train = ", ".join(sorted(names["train"] - names["test"])) or "-"
            only_test = ", ".join(sorted(names["test"] - names["train"])) or "-"
            raise DataError(
                f"{root}: train/ and test/ have different class folders: only in train/: "
                f"{only_train}; only in test/: {only_test}. Both need the same classes."
            )
        layout, test_files = "two splits", frozenset()
    else:
        per_split = {"all": _class_folders(root, "")}
        layout = "one tree"
        test_files = _carve_test(per_split["all"], root)
    classes = tuple(sorted(next(iter(per_split.values()))))
    files, stats = {}, []
    for split, per_class in per_split.items():
        files[split] = [(rel, y) for y, c in enumerate(classes) for rel, _, _ in per_class[c]]
        stats += [f for c in classes for f in per_class[c]]
    return Tree(root, layout, classes, files, stats, test_files)


def _decode(path: Path) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grayscale modes) or ``(H, W, 3)``."""
    try:
        with Image.open(path, formats=_FORMATS) as image:
            mode = image.mode
            if mode in ("I", "F") or mode.startswith("I;"):
                raise DataError(
                    f"{path}: a {mode!r} (16-bit or float) image; bnnns reads 8-bit grayscale or "
                    "color images: convert it to 8 bits."
                )
            target = "L" if mode in GRAYSCALE_MODES else "RGB"
            if mode == target:  # no convert(): it would copy (a third of the decode time)
                image.load()
                return np.asarray(image)
            return np.asarray(image.convert(target))
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(
            f"{path}: cannot decode as a JPEG or PNG image ({type(err).__name__}: {err})."
        ) from err


def _decode_chunk(paths: list[Path]) -> list[np.ndarray]:
    return [_decode(p) for p in paths]


def decode_all(root: Path, rel_paths: list[str], desc: str = "") -> list[np.ndarray]:
    """Decodes ``rel_paths`` (relative to ``root``) on a thread pool, in order."""
    paths = [root / r for r in rel_paths]
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    out: list[np.ndarray] = []
    bar = tqdm(
        total=len(paths),
        desc=desc or f"decoding {root}",
        unit="img",
        disable=len(paths) < PROGRESS_MIN_FILES,
    )
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        for images in pool.map(_decode_chunk, chunks):
            out += images
            bar.update(len(images))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return out


def _stack(tree: Tree, decoded: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """``split -> (N, H, W, C)`` uint8 after the size and channel rules (module docstring)."""
    sizes: dict[tuple[int, int], list] = {}
    for split, images in decoded.items():
        for (rel, _), image in zip(tree.files[split], images, strict=True):
            sizes.setdefault(image.shape[:2], []).append(rel)
    if len(sizes) > 1:
        listed = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        parts = [f"{h}x{w} ({len(rels)} file(s), e.g. {rels[0]})" for (h, w), rels in listed[:5]]
        more = f" and {len(listed) - 5} more sizes" if len(listed) > 5 else ""
        raise DataError(
            f"{tree.root}: images have different sizes (H x W): {', '.join(parts)}{more}; "
            "bnnns does not resize: give every image the same size first."
        )
    (height, width) = next(iter(sizes))
    channels = 1 if all(im.ndim == 2 for ims in decoded.values() for im in ims) else 3
    out = {}
    for split, images in decoded.items():
        array = np.empty((len(images), height, width, channels), dtype=np.uint8)
        for i, image in enumerate(images):
            array[i] = image[..., None] if image.ndim == 2 else image
        out[split] = array
    return out


def load_folder(
    path: str | os.PathLike,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Loads an image folder, from its cache when the cache is current.

    Args:
        path: A two-split or one-tree folder (module docstring).

    Returns:
        ``({"train": (images, labels), "test": (images, labels)}, class_names)``: images uint8
        ``(N, H, W, C)`` with C 1 or 3, labels int32; ``class_names[label]`` is the folder name.

    Raises:
        DataError: A folder, file or image that breaks the rules (the message names it).
    """
    tree = scan(path)
    labels = tree.labels()
    key = folder_cache.cache_key(tree.stats)
    hit = folder_cache.read(tree.root, key, tree.classes, labels)
    if hit is not None:
        images = {s: hit[0][f"x_{s}"] for s in tree.files}
    else:
        decoded = {
            s: decode_all(tree.root, [r for r, _ in f], desc=f"decoding {tree.root} ({s})")
            for s, f in tree.files.items()
        }
        images = _stack(tree, decoded)
        arrays = {f"x_{s}": x for s, x in images.items()}
        arrays.update({f"y_{s}": y for s, y in labels.items()})
        folder_cache.write(tree.root, key, {"classes": np.asarray(tree.classes), **arrays})
    if tree.layout == "two splits":
        return {s: (images[s], labels[s]) for s in ("train", "test")}, tree.classes
    return _carve_loaded(tree, images["all"], labels["all"]), tree.classes


def _carve_loaded(
    tree: Tree, images: np.ndarray, labels: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The one-tree train/test split of the decoded rows (file order kept in each split)."""
    is_test = np.asarray([rel in tree.test_files for rel, _ in tree.files["all"]])
    return {
        "train": (images[~is_test], labels[~is_test]),
        "test": (images[is_test], labels[is_test]),
    }
