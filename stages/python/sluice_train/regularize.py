"""What the worker does beside ORT's graphs to keep a training sound: decoupled weight decay on
weights only, and the warnings for a loss that grows and for a model worse than a constant
prediction.

Weight decay lives here because ORT's AdamW graph node decays every parameter of the one
parameter sequence the training API binds, biases included; the optimizer graph is therefore
built with weight_decay 0 and the decay applied after each step, to the chosen tensors only.
"""
from __future__ import annotations

import numpy as np

# Epochs in a row of a growing training loss, and how far above the lowest loss so far it must
# end, before the learning rate is called out. Near convergence Adam's loss wobbles (the MLP of
# tests/regression.rs rose 1.26× over three epochs at the default lr); a diverging one grows
# geometrically.
LOSS_GROWTH_EPOCHS = 3
LOSS_GROWTH_FACTOR = 2.0


def decayed_params(model, trainable: list) -> list:
    """The trainable parameters weight decay applies to: those of rank 2 or more (weight matrices,
    conv kernels). Biases and normalization scales and shifts are vectors, and decaying them only
    pulls the model's offsets towards 0 (the convention of PyTorch's and timm's recipes)."""
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    return [name for name in trainable if ranks.get(name, 0) >= 2]


class WeightDecay:
    """AdamW's decoupled decay, p ← p − lr·λ·p, for the named parameters of a checkpoint state.

    On the CPU a parameter's numpy() is a view of the tensor the session trains, so the decay is
    an in-place multiply (~1 µs); each view is checked to write through once, and a parameter
    whose view does not (a device tensor) is copied out and back instead (~10-20 µs)."""

    def __init__(self, state, names: list, weight_decay: float):
        self.weight_decay = weight_decay
        self.views, self.copied = [], []
        self._lr, self._factor = None, None
        if weight_decay <= 0:
            return
        for name in names:
            p = state.parameters[name]
            try:
                view = p._parameter.data.numpy()
            except Exception:  # a private attribute of ORT's wrapper: fall back to copies
                view = None
            if view is not None and view.size and _writes_through(p, view):
                self.views.append(view)
            else:
                self.copied.append(p)

    def __bool__(self) -> bool:
        return bool(self.views or self.copied)

    def step(self, lr: float) -> None:
        # The factor as the float32 it is multiplied in (what numpy makes of a Python float
        # here), made once per learning rate: a per-call conversion was a visible share of a
        # small model's step.
        if lr != self._lr:
            self._lr, self._factor = lr, np.float32(1.0 - lr * self.weight_decay)
        factor = self._factor
        for view in self.views:
            np.multiply(view, factor, out=view)
        for p in self.copied:
            p.data = p.data * factor


def _writes_through(parameter, view: np.ndarray) -> bool:
    """Whether writing `view` changes the parameter itself."""
    flat = view.reshape(-1)
    old = float(flat[0])
    probe = old + 1.0 if abs(old) < 1e6 else old / 2
    flat[0] = probe
    seen = float(parameter.data.reshape(-1)[0])
    flat[0] = old
    return seen == np.float32(probe)


def loss_growth(rows: list, lr) -> str | None:
    """A warning when the training loss grew LOSS_GROWTH_EPOCHS epochs in a row to at least
    LOSS_GROWTH_FACTOR times its lowest: the usual sign of a learning rate too high to descend."""
    if len(rows) <= LOSS_GROWTH_EPOCHS:
        return None
    recent = [r["train_loss"] for r in rows[-LOSS_GROWTH_EPOCHS - 1 :]]
    if not all(b > a for a, b in zip(recent, recent[1:])):
        return None
    if recent[-1] < LOSS_GROWTH_FACTOR * min(r["train_loss"] for r in rows):
        return None
    return (
        f"the training loss grew for {LOSS_GROWTH_EPOCHS} epochs in a row (epochs "
        f"{rows[-LOSS_GROWTH_EPOCHS - 1]['epoch']}–{rows[-1]['epoch']}: {recent[0]:.4g} → {recent[-1]:.4g}); "
        f"optimizer.lr {lr} may be too high"
    )


def baseline(task: str, train_labels: np.ndarray, val_labels: np.ndarray) -> dict:
    """What predicting without features scores on the validation split: the train split's mean
    target (RMSE) or its most frequent class (accuracy)."""
    if task == "regression":
        mean = float(np.mean(train_labels, dtype=np.float64))
        rmse = float(np.sqrt(np.mean((val_labels.astype(np.float64) - mean) ** 2)))
        return {"metric": "val_rmse", "value": rmse, "predicts": "the train mean"}
    majority = int(np.bincount(train_labels).argmax())
    return {"metric": "val_accuracy", "value": float(np.mean(val_labels == majority)), "predicts": "the majority class"}


def worse_than_baseline(at_export: dict, base: dict) -> str | None:
    """A warning when the exported epoch's row scores worse than `base`."""
    if base["metric"] not in at_export:
        return None
    value = at_export[base["metric"]]
    worse = value > base["value"] if base["metric"] == "val_rmse" else value < base["value"]
    if not worse:
        return None
    return (
        f"the exported model (epoch {at_export['epoch']}) has {base['metric']} {value:.4g}, worse than "
        f"{base['value']:.4g} from always predicting {base['predicts']}; check the learning rate, epochs and features"
    )
