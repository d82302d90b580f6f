"""Training data: the `.npy` splits written by sluice's normalize stage, the epoch order, batches
and image augmentation.

Every random choice comes from a generator seeded by (seed, epoch[, stream]), never from state
carried across epochs, so a run resumed at an epoch boundary sees exactly the batches an
uninterrupted run would have seen.
"""
from __future__ import annotations

import os

import numpy as np


class DataError(Exception):
    """A problem with the input arrays, worded for the user."""


def load_split(directory: str, name: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads `features.npy` and `labels.npy` from a split directory, checked and in the dtypes the
    training graph takes (float32 features; int64 labels for classification, float32 otherwise)."""
    if not os.path.isdir(directory):
        raise DataError(f"input `{name}` ({directory}) is not a directory\nhint: point it at a normalize stage's `{name}` output")
    arrays = []
    for file in ("features.npy", "labels.npy"):
        path = os.path.join(directory, file)
        if not os.path.isfile(path):
            raise DataError(f"input `{name}` has no {file} ({path})\nhint: point it at a normalize stage's `{name}` output")
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except Exception as e:
            raise DataError(f"cannot read {path}: {e}") from e
    features, labels = arrays
    if features.ndim not in (2, 4):
        raise DataError(
            f"{directory}/features.npy has shape {list(features.shape)}; expected [N, F] (a table) or [N, C, H, W] (images)"
        )
    if labels.ndim != 1 or len(labels) != len(features):
        raise DataError(
            f"{directory}/labels.npy has shape {list(labels.shape)}; expected [{len(features)}] (one label per row of features.npy)"
        )
    if task == "classification":
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{directory}/labels.npy holds {labels.dtype} values, but task classification needs integer class ids"
                f"\nhint: set task: regression for numeric targets"
            )
        labels = labels.astype(np.int64, copy=False)
    else:
        labels = labels.astype(np.float32, copy=False)
    return np.ascontiguousarray(features, dtype=np.float32), labels


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches; the last, partial one is kept."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class Augmenter:
    """Random image transforms applied per sample to a batch [B, C, H, W]: horizontal flip
    (p = 0.5), a random crop of the zero-padded image back to its size, and a rotation by a uniform
    angle in ±degrees (nearest neighbour; uncovered pixels become 0). Zero is the mean after
    sluice's normalization, so padding reads as "average pixel"."""

    def __init__(self, spec: dict):
        self.hflip = bool(spec.get("hflip"))
        self.padding = int(spec.get("crop_padding") or 0)
        self.degrees = float(spec.get("rotate_degrees") or 0.0)

    @property
    def active(self) -> bool:
        return self.hflip or self.padding > 0 or self.degrees > 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, _, h, w = x.shape
        if self.hflip:
            flip = rng.random(b) < 0.5
            x = x.copy()
            x[flip] = x[flip][..., ::-1]
        if self.padding:
            p = self.padding
            padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            dy = rng.integers(0, 2 * p + 1, b)
            dx = rng.integers(0, 2 * p + 1, b)
            x = np.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
        if self.degrees:
            x = _rotate(x, np.deg2rad(rng.uniform(-self.degrees, self.degrees, b)))
        return np.ascontiguousarray(x, dtype=np.float32)


def _rotate(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotates each image about its centre by its angle: each output pixel takes the nearest source
    pixel of the inverse rotation."""
    b, _, h, w = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    sy = np.rint(cos * yy - sin * xx + cy).astype(np.intp)
    sx = np.rint(sin * yy + cos * xx + cx).astype(np.intp)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    rows = np.arange(b)[:, None, None]
    out = x[rows, :, np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)]  # [B, H, W, C]
    out[~inside] = 0.0
    return out.transpose(0, 3, 1, 2)
