"""Normalisation and augmentations in numpy/PIL (no TensorFlow).

* ``"cifar"``: zero-pad 4 pixels, random crop back to ``H x W``, random horizontal flip.
* ``"imagenet"``: train = random-resized-crop (scale ``(0.08, 1)``, ratio ``(3/4, 4/3)``, the
  torchvision algorithm: 10 rejection-sampling tries, then a ratio-clamped centre crop) to
  ``size x size`` + random flip; eval = resize the shorter side to ``int(size * 256 / 224)``
  (bilinear, antialiased) and take the centre ``size x size`` crop.

All randomness comes from the ``np.random.Generator`` passed in, so callers control it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_PAD = 4
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def normalize(
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Scales uint8 images to ``[0, 1]`` (floats are kept) and standardises each channel.

    Args:
        images: ``(..., C)`` array.
        mean: Per-channel (or single) mean.
        std: Per-channel (or single) standard deviation.
        out: Optional float32 array of ``images``' shape to write into (e.g. a batch in shared
            memory); the same values bit for bit as without it.

    Returns:
        float32 array of the same shape (``out`` when given).
    """
    if out is None:
        out = images.astype(np.float32)
    else:
        np.copyto(out, images, casting="unsafe")  # the cast of astype(np.float32)
    if images.dtype == np.uint8:
        out *= np.float32(1.0 / 255.0)
    out -= np.asarray(mean, dtype=np.float32)
    out /= np.asarray(std, dtype=np.float32)
    return out


def cifar_params(rng: np.random.Generator, n: int, pad: int = CIFAR_PAD) -> np.ndarray:
    """Draws crop offsets and flips for ``n`` images.

    Args:
        rng: Random generator.
        n: Number of images.
        pad: Zero padding on each side.

    Returns:
        int64 ``(n, 3)``: row offset, column offset (both in ``[0, 2 * pad]``) and flip (0/1).
    """
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = (rng.random(n) < 0.5).astype(np.int64)
    return np.concatenate([offsets, flips[:, None]], axis=1)


def pad_crop_flip(images: np.ndarray, params: np.ndarray, pad: int = CIFAR_PAD) -> np.ndarray:
    """Zero-pads, crops back to the input size and optionally flips each image.

    Args:
        images: ``(k, H, W, C)`` array.
        params: ``(k, 3)`` from :func:`cifar_params`.
        pad: Zero padding on each side.

    Returns:
        Array of the same shape and dtype as ``images``.
    """
    k, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = params[:, 0, None] + np.arange(height)
    cols = params[:, 1, None] + np.arange(width)
    cols = np.where(params[:, 2, None].astype(bool), cols[:, ::-1], cols)
    return padded[np.arange(k)[:, None, None], rows[:, :, None], cols[:, None, :]]


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Returns ``image`` as ``(H, W, channels)`` (adds an axis, repeats grey, drops alpha)."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if image.shape[-1] == 1:
        return np.repeat(image, channels, axis=-1)
    if image.shape[-1] > channels:
        return image[..., :channels]
    raise ValueError(f"Cannot convert an image of shape {image.shape} to {channels} channels.")


def resize(
    image: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Bilinear (antialiased) resize of a uint8 ``(H, W, C)`` image with PIL.

    Args:
        image: uint8 image.
        size: Output ``(width, height)``.
        box: Optional source region ``(left, top, right, bottom)`` to resize from.

    Returns:
        uint8 ``(height, width, C)`` image.
    """
    if image.dtype != np.uint8:
        raise TypeError(f"imagenet-style resizing needs uint8 images, got {image.dtype}.")
    if image.shape[-1] == 3:
        pil = Image.fromarray(np.ascontiguousarray(image))
        return np.asarray(pil.resize(size, Image.Resampling.BILINEAR, box=box))
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                size, Image.Resampling.BILINEAR, box=box
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
) -> tuple[int, int, int, int]:
    """Samples a crop like ``torchvision.transforms.RandomResizedCrop.get_params``.

    Args:
        height: Image height.
        width: Image width.
        rng: Random generator.
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio (width / height), sampled log-uniformly.

    Returns:
        ``(top, left, crop_height, crop_width)``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def imagenet_train(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random-resized-crop to ``size x size`` then a random horizontal flip.

    Args:
        image: uint8 ``(H, W, C)`` image.
        size: Output side.
        rng: Random generator (used for the crop, then for the flip).

    Returns:
        uint8 ``(size, size, C)`` image.
    """
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng)
    out = resize(image, (size, size), box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def imagenet_eval(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to ``int(size * 256 / 224)`` and centre-crops ``size x size``.

    Args:
        image: uint8 ``(H, W, C)`` image.
        size: Output side.

    Returns:
        uint8 ``(size, size, C)`` image.
    """
    height, width = image.shape[:2]
    short = int(size * 256 / 224)
    if height <= width:
        new_h, new_w = short, max(short, int(short * width / height))
    else:
        new_h, new_w = max(short, int(short * height / width)), short
    out = resize(image, (new_w, new_h))
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return out[top : top + size, left : left + size]
