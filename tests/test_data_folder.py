"""The ``folder:<dir>`` data source (bnnns.data.folder): layouts, decode rules, the on-disk
cache, every refusal, the command line, and the shipped CIFAR-10 JPEG folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnnns.data import folder, folder_cache, load_dataset
from bnnns.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_TAR = os.path.join(REPO, "..", "shared", "data", "cifar10_jpeg", "cifar10_jpeg.tar.gz")
CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _image(seed: int, side: int = 8, channels: int = 3) -> np.ndarray:
    shape = (side, side) if channels == 1 else (side, side, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)


# Class folders written out of sorted order; names out of order, extensions in several cases.
NAMES = ("b.png", "a.PNG", "c.Png")


def _tree(root: Path, classes=("cat", "ant", "bee"), names=NAMES, seed=0) -> dict:
    """Writes ``root/<class>/<name>`` 8x8 RGB PNGs; returns ``{(class, name): pixels}``."""
    written = {}
    for c, cls in enumerate(classes):
        for n, name in enumerate(names):
            pixels = _image(seed + 100 * c + n)
            _write(root / cls / name, pixels)
            written[cls, name] = pixels
    return written


def _expected(written: dict) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels in the documented order: sorted classes, then sorted file names."""
    keys = sorted(written)
    classes = sorted({c for c, _ in keys})
    return (
        np.stack([written[k] for k in keys]),
        np.asarray([classes.index(c) for c, _ in keys], dtype=np.int32),
    )


@pytest.fixture
def two_splits(tmp_path: Path) -> tuple[Path, dict, dict]:
    root = tmp_path / "data"
    train = _tree(root / "train", seed=0)
    test = _tree(root / "test", names=("z.png", "y.png"), seed=50)
    return root, train, test


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file the loader decodes."""
    seen: list[Path] = []
    real = folder._decode

    def counting(path: Path) -> np.ndarray:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(folder, "_decode", counting)
    return seen


# ---------------------------------------------------------------- layouts and decode rules


def test_two_splits_labels_follow_sorted_folders_and_pixels_are_exact(two_splits) -> None:
    root, train, test = two_splits
    arrays, classes = folder.load_folder(root)
    assert classes == ("ant", "bee", "cat")
    for split, written in (("train", train), ("test", test)):
        want_x, want_y = _expected(written)
        x, y = arrays[split]
        assert x.dtype == np.uint8 and x.shape == (len(written), 8, 8, 3)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(x, want_x)  # PNG is lossless
    splits, info = load_dataset(f"folder:{root}")
    assert (info.name, info.image_shape, info.num_classes) == ("folder", (8, 8, 3), 3)
    assert (info.num_train, info.num_test, info.augment) == (9, 6, "none")
    assert len(info.mean) == 3 and all(0 < s for s in info.std)


def test_jpeg_pixels_are_pillows_decode(tmp_path: Path) -> None:
    paths = []
    for split in ("train", "test"):
        for cls, name in (("a", "0.jpg"), ("b", "1.JPEG")):
            paths.append(tmp_path / split / cls / name)
            _write(paths[-1], _image(len(paths)))
    arrays, _ = folder.load_folder(tmp_path)
    want = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    np.testing.assert_array_equal(np.concatenate([arrays["train"][0], arrays["test"][0]]), want)


def test_all_grayscale_gives_one_channel_else_rgb(tmp_path: Path) -> None:
    gray = {}
    for split in ("train", "test"):
        for cls in ("a", "b"):
            gray[split, cls] = _image(ord(cls) + len(split), channels=1)
            _write(tmp_path / split / cls / "0.png", gray[split, cls])
    x = folder.load_folder(tmp_path)[0]["train"][0]
    assert x.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(x[0, ..., 0], gray["train", "a"])
    color = _image(7)
    _write(tmp_path / "test" / "b" / "1.png", color)  # one RGB image anywhere: all RGB
    arrays = folder.load_folder(tmp_path)[0]
    assert arrays["train"][0].shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(
        arrays["train"][0][0], np.repeat(gray["train", "a"][..., None], 3, -1)
    )
    np.testing.assert_array_equal(arrays["test"][0][2], color)


def test_one_tree_carves_a_fixed_test_split(tmp_path: Path) -> None:
    written = _tree(tmp_path, names=[f"{i:02d}.png" for i in range(10)])
    arrays, classes = folder.load_folder(tmp_path)
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    assert classes == ("ant", "bee", "cat")
    assert np.bincount(y_test).tolist() == [2, 2, 2]  # round(0.2 * 10) per class
    assert np.bincount(y_train).tolist() == [8, 8, 8]
    # every row is one written image of its class, and no image is in both splits
    rows = {c: {written[c, n].tobytes() for cc, n in written if cc == c} for c in classes}
    seen = [x.tobytes() for x in (*x_train, *x_test)]
    assert len(set(seen)) == 30
    for x, y in zip((*x_train, *x_test), (*y_train, *y_test), strict=True):
        assert x.tobytes() in rows[classes[y]]
    # the test split does not move with the seed; validation comes out of train only
    test_bytes = {x.tobytes() for x in x_test}
    for seed in (0, 1):
        splits, info = load_dataset(
            f"folder:{tmp_path}", validation_fraction=0.25, validation_seed=seed
        )
        assert {x.tobytes() for x in splits["test"].images} == test_bytes
        assert (info.num_train, info.num_validation, info.num_test) == (18, 6, 6)
        train_val = {x.tobytes() for s in ("train", "validation") for x in splits[s].images}
        assert len(train_val) == 24 and not train_val & test_bytes


def _smallest_hashes(names: list[str], count: int) -> set[str]:
    return set(sorted(names, key=lambda n: hashlib.sha256(n.encode()).digest())[:count])


def test_one_tree_test_files_are_the_smallest_hashes(tmp_path: Path) -> None:
    _tree(tmp_path, classes=("a", "b"), names=[f"{i}.png" for i in range(7)])
    test = folder.scan(tmp_path).test_files
    want = {c: _smallest_hashes([f"{c}/{i}.png" for i in range(7)], 1) for c in "ab"}
    assert test == want["a"] | want["b"]  # max(1, round(0.2 * 7)) = 1 per class
    _write(tmp_path / "a" / "7.png", _image(99))  # one more image in a: 2 of 8, the old one kept
    test = folder.scan(tmp_path).test_files
    assert test == _smallest_hashes([f"a/{i}.png" for i in range(8)], 2) | want["b"]
    assert want["a"] <= test


def test_hidden_files_and_top_level_files_are_skipped(two_splits) -> None:
    root, train, _ = two_splits
    (root / "README.txt").write_text("about")
    (root / "train" / "notes.md").write_text("about")
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"\0\1")
    (root / "val" / "x").mkdir(parents=True)  # beside train/ and test/: not read
    np.testing.assert_array_equal(folder.load_folder(root)[0]["train"][0], _expected(train)[0])


# ---------------------------------------------------------------- the cache


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / folder_cache.IN_TREE).glob("folder-*.npz"))


def test_second_load_reads_the_cache(two_splits, decodes) -> None:
    root, _, _ = two_splits
    first, _ = folder.load_folder(root)
    assert len(decodes) == 15 and len(_cache_files(root)) == 1
    second, _ = folder.load_folder(root)
    assert len(decodes) == 15  # nothing decoded again
    for split in ("train", "test"):
        for a, b in zip(first[split], second[split], strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype


@pytest.mark.parametrize("change", ["rewrite", "add", "remove", "rename"])
def test_a_changed_file_rebuilds_the_cache(two_splits, decodes, change: str) -> None:
    root, train, _ = two_splits
    folder.load_folder(root)
    old = _cache_files(root)
    target = root / "train" / "bee" / "a.PNG"
    new_pixels = _image(1234)
    if change == "rewrite":
        _write(target, new_pixels)
        st = target.stat()  # same size (8x8 PNGs of noise may match): move the mtime for sure
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "add":
        _write(root / "train" / "bee" / "d.png", new_pixels)
    elif change == "remove":
        target.unlink()
    else:
        target.rename(root / "train" / "bee" / "0.png")
    decodes.clear()
    arrays, _ = folder.load_folder(root)
    assert decodes  # decoded again
    assert len(_cache_files(root)) == 1 and _cache_files(root) != old  # old file removed
    x, y = arrays["train"]
    assert len(x) == {"add": 10, "remove": 8}.get(change, 9)
    if change == "rewrite":
        np.testing.assert_array_equal(x[3], new_pixels)  # ant: 3 rows, then bee/a.PNG
    decodes.clear()
    folder.load_folder(root)
    assert not decodes


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "wrong_labels"])
def test_a_damaged_cache_is_rebuilt(two_splits, decodes, damage: str) -> None:
    root, train, _ = two_splits
    folder.load_folder(root)
    (path,) = _cache_files(root)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # a pixel byte of x_train: only the zip's CRC-32 can tell
        at = data.index(_expected(train)[0].tobytes()[:16])
        data[at + 5] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"not a zip file")
    path.write_bytes(bytes(data))
    if damage == "wrong_labels":  # a valid npz, but not this folder's labels
        with np.load(path) as npz:
            stored = dict(npz)
        stored["y_train"] = stored["y_train"][::-1].copy()
        with open(path, "wb") as f:
            np.savez(f, **stored)
    decodes.clear()
    with pytest.warns(folder_cache.FolderCacheWarning, match="unusable image-folder cache"):
        arrays, _ = folder.load_folder(root)
    assert len(decodes) == 15
    np.testing.assert_array_equal(arrays["train"][0], _expected(train)[0])
    np.testing.assert_array_equal(arrays["train"][1], _expected(train)[1])
    decodes.clear()
    folder.load_folder(root)  # rewritten whole: read without a warning
    assert not decodes


def test_unwritable_folder_caches_under_xdg_cache_home(two_splits, decodes, tmp_path, monkeypatch):
    root, _, _ = two_splits
    (root / folder_cache.IN_TREE).write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder.load_folder(root)
    cached = list((tmp_path / "xdg" / "bnnns" / "folder").glob("*/folder-*.npz"))
    assert len(cached) == 1
    decodes.clear()
    folder.load_folder(root)
    assert not decodes


def test_a_failed_cache_write_leaves_no_file(two_splits, monkeypatch, tmp_path) -> None:
    root, train, _ = two_splits
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def broken_savez(f, **arrays):
        f.write(b"PK half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder_cache.np, "savez", broken_savez)
    with pytest.warns(folder_cache.FolderCacheWarning, match="could not write"):
        arrays, _ = folder.load_folder(root)
    np.testing.assert_array_equal(arrays["train"][0], _expected(train)[0])  # data still returned
    for directory in folder_cache.cache_dirs(root):
        assert not directory.exists() or not list(directory.iterdir())  # no partial/temp file


# ---------------------------------------------------------------- refusals


def _only_train(root: Path) -> None:
    _tree(root / "train")


def _mixed_sizes(root: Path) -> None:
    _tree(root)
    _write(root / "bee" / "big.png", _image(5, side=12))


def _sixteen_bit(root: Path) -> None:
    _tree(root)
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(root / "ant" / "deep.png")


def _classes_differ(root: Path) -> None:
    _tree(root / "train", classes=("ant", "bee", "cat"))
    _tree(root / "test", classes=("ant", "cow"))


ERRORS = [
    ("missing", lambda r: None, r"image folder .*missing does not exist"),
    ("not_a_dir", lambda r: r.write_text("x"), r"not_a_dir is not a folder"),
    ("no_classes", lambda r: (r.mkdir(), (r / "a.png").write_bytes(b"")), r"no class folders"),
    ("empty_class", lambda r: (_tree(r), (r / "dog").mkdir()), r"dog: class folder 'dog' holds no"),
    (
        "undecodable",
        lambda r: (_tree(r), (r / "bee" / "bad.png").write_bytes(b"\x89PNG garbage")),
        r"bee/bad\.png: cannot decode as a JPEG or PNG",
    ),
    (
        "gif_named_jpg",
        lambda r: (_tree(r), Image.new("RGB", (8, 8)).save(r / "ant" / "g.jpg", format="GIF")),
        r"ant/g\.jpg: cannot decode",
    ),
    (
        "unsupported_ext",
        lambda r: (_tree(r), (r / "cat" / "x.bmp").write_bytes(b"BM")),
        r"cat/x\.bmp: unsupported file type \(1 such file",
    ),
    (
        "nested",
        lambda r: (_tree(r), (r / "cat" / "more").mkdir()),
        r"cat/more: a folder inside class folder 'cat'",
    ),
    ("classes_differ", _classes_differ, r"only in train/: bee, cat; only in test/: cow"),
    ("only_train", _only_train, r"has train/ but no test/"),
    (
        "mixed_sizes",
        _mixed_sizes,
        r"different sizes \(H x W\): 8x8 \(9 file\(s\), e\.g\. ant/a\.PNG\), "
        r"12x12 \(1 file\(s\), e\.g\. bee/big\.png\)",
    ),
    (
        "one_image_class",
        lambda r: (_tree(r), _write(r / "dog" / "0.png", _image(1))),
        r"class folder 'dog' has 1 image; a one-tree folder needs >= 2",
    ),
    ("sixteen_bit", _sixteen_bit, r"deep\.png: a 'I;16' \(16-bit or float\) image"),
]


@pytest.mark.parametrize("name,make,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_refusals_name_the_problem_and_the_path(tmp_path: Path, name, make, message) -> None:
    root = tmp_path / name
    make(root)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(f"folder:{root}")
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------- command line


def _train_cli(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    tiny = [
        "--config.model.width=4",
        "--config.batch_size=8",
        "--config.eval_batch_size=16",
        "--config.pretrain.epochs=1",
        "--config.pretrain.optimizer=adam",
        "--config.pretrain.learning_rate=0.002",
        "--config.progress_bar=False",
        "--config.log_every_steps=1",
    ]
    return subprocess.run(
        [sys.executable, "train.py", "--config", "configs/mnist_lns.py", f"--workdir={workdir}"]
        + tiny
        + list(flags),
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_cli_on_a_folder(two_splits, tmp_path: Path) -> None:
    root, _, _ = two_splits
    done = _train_cli(
        tmp_path / "run", f"--config.dataset=folder:{root}", "--config.stages=pretrain"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"folder:{root} (9 train / 6 test)" in done.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["pretrain"]
    assert summary["stages"][0]["steps"] == 1  # 9 images, batch 8: the partial batch dropped
    assert 0 <= summary["test_accuracy"] <= 1


def test_train_cli_folder_errors_are_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _tree(root)
    (root / "bee" / "bad.png").write_bytes(b"not an image")
    done = _train_cli(tmp_path / "run", f"--config.dataset=folder:{root}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"{root}/bee/bad.png: cannot decode as a JPEG or PNG image" in done.stderr
    done = _train_cli(tmp_path / "run2", f"--config.dataset=folder:{tmp_path}/none")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"image folder '{tmp_path}/none' does not exist" in done.stderr


# ---------------------------------------------------------------- the shipped CIFAR-10 folder


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(CIFAR_TAR), reason=f"no CIFAR-10 JPEG tarball at {CIFAR_TAR}"
)
def test_cifar10_jpeg_folder(tmp_path: Path) -> None:
    with tarfile.open(CIFAR_TAR) as tar:
        tar.extractall(tmp_path, filter="data")
    arrays, classes = folder.load_folder(tmp_path)
    assert classes == CIFAR_CLASSES
    for split, count in (("train", 50_000), ("test", 10_000)):
        x, y = arrays[split]
        assert x.shape == (count, 32, 32, 3) and x.dtype == np.uint8
        assert np.bincount(y, minlength=10).tolist() == [count // 10] * 10
        assert np.all(np.diff(y) >= 0)  # classes one after another, in folder order
    first = np.asarray(Image.open(tmp_path / "test" / "truck" / "0999.jpg").convert("RGB"))
    np.testing.assert_array_equal(arrays["test"][0][-1], first)
