#!/usr/bin/env python3
"""Checks that `data.Feed`, the worker's hot path (ORT tensors made once over a buffer of gathered
rows, the module's binding called directly), trains exactly like the loop ORT documents
(`Module.__call__` on freshly indexed batches, the decay factor fed as a new array each step):
the same losses and byte-identical weights, with the epoch gathered at once, by windows of two
batches and by single batches, and through Feed's `Module.__call__` fallback. The run has what
the worker's loop can meet: a partial last batch, two epochs, augmentation, a learning rate that
changes every step and the in-graph weight decay whose factor follows it. Exits non-zero on the
first difference.

    python check_feed.py

Needs the worker's environment (onnxruntime-training, onnx, numpy); imports the worker from
../sluice_train.
"""
import os
import sys
import tempfile
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sluice_train import data, models, regularize  # noqa: E402
from sluice_train.__main__ import _stderr_kept_on_failure  # noqa: E402

ROWS, BATCH, EPOCHS, SHAPE, CLASSES, DECAY = 37, 8, 2, (1, 6, 6), 3, 0.05
AUGMENT = data.Augmenter({"hflip": True, "crop_padding": 1, "rotate_degrees": 15.0})


def lr_at(step: int) -> float:
    return 0.02 * (1 + step % 7) / 7


def load_api():
    """onnxruntime.training without its torch-needing __init__ (as the worker imports it)."""
    import onnxruntime as ort

    package = types.ModuleType("onnxruntime.training")
    package.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]
    sys.modules.setdefault("onnxruntime.training", package)
    from onnxruntime.training import api, artifacts
    from onnxruntime.training.onnxblock import optim

    ort.set_default_logger_severity(3)
    return api, artifacts, optim


def make_artifacts(directory: str, artifacts, optim) -> None:
    spec = {"type": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0}
    model, trainable = models.build(spec, "features.npy", SHAPE, CLASSES, "classification", 0)
    with _stderr_kept_on_failure():  # the gradient builder's info logging
        artifacts.generate_artifacts(
            model,
            requires_grad=trainable,
            loss=artifacts.LossType.CrossEntropyLoss,
            optimizer=optim.AdamW(weight_decay=0.0),
            artifact_directory=directory,
            additional_output_names=[models.output_name("classification")],
        )
    placed = regularize.add_weight_decay(directory, regularize.decayed_params(model, trainable))
    if not placed:
        sys.exit("the check needs weights decayed in the training graph, and none was placed")


def open_module(api, directory: str):
    state = api.CheckpointState.load_checkpoint(os.path.join(directory, "checkpoint"))
    module = api.Module(
        os.path.join(directory, "training_model.onnx"), state, os.path.join(directory, "eval_model.onnx")
    )
    optimizer = api.Optimizer(os.path.join(directory, "optimizer_model.onnx"), module)
    module.train()
    return state, module, optimizer


def weights(state) -> dict:
    return {name: np.array(p.data) for name, p in state.parameters}


def reference(api, directory: str, x, y) -> tuple:
    """The documented loop: fresh batches, the factor as a new array, Module.__call__."""
    state, module, optimizer = open_module(api, directory)
    losses, step = [], 0
    for epoch in range(1, EPOCHS + 1):
        order = data.epoch_order(ROWS, 0, epoch, True)
        rng = np.random.default_rng([0, epoch, 1])
        for part in data.batch_slices(ROWS, BATCH):
            lr = lr_at(step)
            optimizer.set_learning_rate(lr)
            factor = np.array([regularize.decay_factor(lr, DECAY)], dtype=np.float32)
            idx = order[part]
            losses.append(float(module(AUGMENT(x[idx], rng), y[idx], factor)[0]))
            optimizer.step()
            module.lazy_reset_grad()
            step += 1
    return losses, weights(state)


def with_feed(api, directory: str, x, y, fallback: bool) -> tuple:
    """The worker's loop: one Feed, the factor written into its input in place."""
    state, module, optimizer = open_module(api, directory)
    factor = np.array([1.0], dtype=np.float32)
    feed = data.Feed(module, x, y, BATCH, (factor,), AUGMENT)
    if fallback:
        feed.step = feed._call
    losses, step = [], 0
    for epoch in range(1, EPOCHS + 1):
        feed.epoch(data.epoch_order(ROWS, 0, epoch, True), np.random.default_rng([0, epoch, 1]))
        for b in range(len(data.batch_slices(ROWS, BATCH))):
            lr = lr_at(step)
            optimizer.set_learning_rate(lr)
            factor[0] = regularize.decay_factor(lr, DECAY)
            losses.append(feed.step(b))
            optimizer.step()
            module.lazy_reset_grad()
            step += 1
    return losses, weights(state), feed.window


def main() -> None:
    api, artifacts, optim = load_api()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, *SHAPE)).astype(np.float32)
    y = rng.integers(0, CLASSES, ROWS).astype(np.int64)
    row_bytes = x[:1].nbytes + y[:1].nbytes
    with tempfile.TemporaryDirectory() as directory:
        make_artifacts(directory, artifacts, optim)
        want_losses, want_weights = reference(api, directory, x, y)
        failures = []
        # (FEED_BYTES, fallback, the window it must give): the epoch at once, 2 batches, 1 batch.
        two = 2 * BATCH * row_bytes
        cases = [(data.FEED_BYTES, False, 5), (two, False, 2), (1, False, 1), (two, True, 2)]
        default_bytes = data.FEED_BYTES
        for feed_bytes, fallback, window in cases:
            data.FEED_BYTES = feed_bytes
            losses, got, got_window = with_feed(api, directory, x, y, fallback)
            data.FEED_BYTES = default_bytes
            before = len(failures)
            case = f"window of {got_window} batches{' through Module.__call__' if fallback else ''}"
            if got_window != window:
                failures.append(f"{case}: expected a window of {window}")
            if losses != want_losses:
                failures.append(f"{case}: losses {losses} differ from {want_losses}")
            for name, value in want_weights.items():
                if value.tobytes() != got[name].tobytes():
                    failures.append(f"{case}: parameter {name} differs")
            print(f"{case}: {'differs' if len(failures) > before else 'identical'}")
        if failures:
            sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
