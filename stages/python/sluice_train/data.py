"""Training data: the `.npy` splits written by sluice's normalize stage, the epoch order, batches,
image augmentation, and the feed that hands batches to ONNX Runtime.

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


# The most memory the shuffled copy of the training split may take (`Feed`): splits up to this
# size are gathered once per epoch, bigger ones a window of whole batches at a time.
FEED_BYTES = 64 << 20


class Feed:
    """Hands the training batches to ONNX Runtime and takes the loss back: the training loop's
    hot path.

    ORT's `Module.__call__` turns every output into numpy by iterating the pybind vector of
    outputs, which costs ~40 µs a step (ORT 1.19.2: `list(fetches)` of the loss and the logits
    takes 39 µs, indexing the same two 2.6 µs), and converts each numpy input per call. On iris
    (~35 µs of graph work a step) that was more than the graph itself. So the epoch's rows are
    gathered into one buffer (a window of whole batches when the split is larger than
    FEED_BYTES), with ORT tensors made once over its batches; a step runs the module's binding
    on them and converts the loss only. Where the binding is missing (another ORT version), steps
    go through `Module.__call__`, with the same inputs and results.

    `extra` are further graph inputs, one array each; writing into them (the decay factor) takes
    effect at the next step. `augment(x, rng)` transforms each batch's features, in batch order,
    as its window is gathered."""

    def __init__(self, module, x: np.ndarray, y: np.ndarray, batch_size: int, extra: tuple = (), augment=None):
        self.module, self.x, self.y, self.extra, self.augment = module, x, y, extra, augment
        n = len(x)
        self.batch_size = batch_size
        self.n_batches = -(-n // batch_size)
        row_bytes = max(1, x[:1].nbytes + y[:1].nbytes)
        # Batches per window: the whole epoch when it fits FEED_BYTES, else at least one batch.
        self.window = max(1, min(self.n_batches, FEED_BYTES // (row_bytes * batch_size)))
        rows = min(n, self.window * batch_size)
        self.xbuf = np.empty((rows, *x.shape[1:]), dtype=x.dtype)
        self.ybuf = np.empty((rows, *y.shape[1:]), dtype=y.dtype)
        self.order, self.rng = None, None
        # The (features, labels) views of each batch of the epoch, by number.
        self.views = []
        for b in range(self.n_batches):
            start = (b % self.window) * batch_size
            stop = start + min(batch_size, n - b * batch_size)
            self.views.append((self.xbuf[start:stop], self.ybuf[start:stop]))
        self.step = self._bind() or self._call

    def _bind(self):
        """The step through the module's binding with prebuilt inputs, or None without one."""
        try:
            from onnxruntime import OrtValue
            from onnxruntime.capi.onnxruntime_pybind11_state import OrtValueVector

            train_step = self.module._model.train_step_with_ort_values
        except (ImportError, AttributeError):
            return None
        # The OrtValues share the arrays' memory and do not keep them alive: `self.keep` does.
        extra = [OrtValue.ortvalue_from_numpy(a) for a in self.extra]
        self.keep, inputs = list(extra), []
        for b, (xv, yv) in enumerate(self.views):
            if b >= self.window and len(xv) == self.batch_size:  # the same rows as an earlier batch
                inputs.append(inputs[b % self.window])
                continue
            values = [OrtValue.ortvalue_from_numpy(xv), OrtValue.ortvalue_from_numpy(yv), *extra]
            self.keep += values
            vector = OrtValueVector()
            vector.reserve(len(values))
            for value in values:
                vector.push_back(value._ortvalue)
            inputs.append(vector)
        window, fill = self.window, self._fill

        def step(b: int) -> float:
            if b % window == 0 and b:
                fill(b)
            fetches = OrtValueVector()
            train_step(inputs[b], fetches)
            return float(fetches[0].numpy())

        return step

    def _call(self, b: int) -> float:
        """One step through `Module.__call__`."""
        if b % self.window == 0 and b:
            self._fill(b)
        xv, yv = self.views[b]
        return float(self.module(xv, yv, *self.extra)[0])

    def epoch(self, order: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Starts an epoch that takes the rows in `order`; `rng` drives `augment`."""
        self.order, self.rng = order, rng
        self._fill(0)

    def _fill(self, first: int) -> None:
        """Gathers the window of batches that starts with batch `first`."""
        start = first * self.batch_size
        part = self.order[start : start + len(self.xbuf)]
        # mode "clip" writes straight into `out` ("raise" buffers); `order` is a permutation.
        np.take(self.x, part, axis=0, out=self.xbuf[: len(part)], mode="clip")
        np.take(self.y, part, axis=0, out=self.ybuf[: len(part)], mode="clip")
        if self.augment:
            for b in range(first, min(first + self.window, self.n_batches)):
                xv = self.views[b][0]
                xv[...] = self.augment(xv, self.rng)


def evaluate_outputs(module, x: np.ndarray, y: np.ndarray) -> tuple:
    """The outputs of the module's eval step on one batch, as numpy; like `Module.__call__` in
    eval mode without its ~40 µs iteration over the outputs (see `Feed`)."""
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import OrtValueVector

        eval_step = module._model.eval_step
    except (ImportError, AttributeError):
        return module(x, y)
    fetches = OrtValueVector()
    eval_step([x, y], fetches)
    return tuple(fetches[i].numpy() for i in range(len(fetches)))
