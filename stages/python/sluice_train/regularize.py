"""What the worker adds to ORT's graphs to keep a training sound: decoupled weight decay on
weights only, and the warnings for a loss that grows and for a model worse than a constant
prediction.

ORT's AdamW graph node decays every parameter of the one parameter sequence the training API binds,
biases included, and the API accepts one optimizer node only. The optimizer graph is therefore
built with weight_decay 0, and the decay is added to the training graph instead (`add_weight_decay`),
for the chosen tensors only: each step's forward and backward pass ends with
w ← w·(1 − lr·λ), before the optimizer step applies the Adam update. That is PyTorch's AdamW
(`torch.optim.AdamW` decays before its update, from the same weights the gradient saw).
"""
from __future__ import annotations

import json
import os

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


# The training graph's input carrying each step's decay factor 1 − lr·λ (float32 [1]). A graph
# input rather than a constant: the learning rate follows the schedule, and one set of artifacts
# serves every lr and λ.
FACTOR_INPUT = "weight_decay_factor"
# Which weights the training graph decays, beside the artifacts (the rest are decayed by
# `WeightDecay`).
PLAN_FILE = "weight_decay.json"
# The suffix of the gradient accumulators' "updated" flags, graph outputs that ORT's Module keeps
# from the user's outputs. The decay's own flags carry it too, for the same reason.
_FLAG_SUFFIX = "_grad.accumulation.out"
_PREFIX = "sluice.weight_decay/"


def add_weight_decay(directory: str, names: list) -> list:
    """Adds w ← w·FACTOR_INPUT to `directory`/training_model.onnx for each of `names` it can order
    after every read of w, writes PLAN_FILE, and returns the names it decays.

    The write is an in-place InPlaceAccumulatorV2 with overwrite set (the op that accumulates the
    gradients), run after every node that reads w: its `overwrite` input is a gradient
    accumulator's flag (always true) downstream of all of them, which costs no extra node. A
    weight read inside a subgraph, or by a node no accumulator depends on, is left to
    `WeightDecay`."""
    import onnx
    from onnx import TensorProto, helper

    path = os.path.join(directory, "training_model.onnx")
    # The graph alone: a model whose weights live in external files keeps them there.
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    flags = [o.name for o in graph.output if o.name.endswith(_FLAG_SUFFIX)]
    bit = {name: 1 << i for i, name in enumerate(flags)}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    in_subgraphs = _subgraph_names(graph)
    # reach[i]: the flags node i's outputs lead to, as a bit mask. ONNX lists nodes in topological
    # order, so one pass from the end sees every consumer before its producer.
    reach = [0] * len(graph.node)
    for index in range(len(graph.node) - 1, -1, -1):
        mask = 0
        for out in graph.node[index].output:
            mask |= bit.get(out, 0)
            for c in consumers.get(out, ()):
                mask |= reach[c]
        reach[index] = mask

    nodes, placed = [], []
    for name in names:
        readers = consumers.get(name, [])
        if name in in_subgraphs or not readers or any(reach[c] == 0 for c in readers):
            continue
        common = reach[readers[0]]
        for c in readers[1:]:
            common &= reach[c]
        if common:
            after = _flag(flags, common)
        else:  # no single flag follows every reader: wait for one flag of each
            after = None
            for i, flag in enumerate(sorted({_flag(flags, reach[c]) for c in readers})):
                if after is None:
                    after = flag
                else:
                    joined = f"{_PREFIX}{name}/after{i}"
                    nodes.append(helper.make_node("And", [after, flag], [joined], name=joined))
                    after = joined
        decayed = f"{_PREFIX}{name}/decayed"
        done = f"{_PREFIX}{name}{_FLAG_SUFFIX}"
        nodes.append(helper.make_node("Mul", [name, FACTOR_INPUT], [decayed], name=decayed))
        nodes.append(
            helper.make_node("InPlaceAccumulatorV2", [name, decayed, after], [done], name=done, domain="com.microsoft")
        )
        graph.output.append(helper.make_tensor_value_info(done, TensorProto.BOOL, [1]))
        placed.append(name)
    if placed:
        graph.input.append(helper.make_tensor_value_info(FACTOR_INPUT, TensorProto.FLOAT, [1]))
        graph.node.extend(nodes)
        onnx.save(model, path)
    with open(os.path.join(directory, PLAN_FILE), "w") as f:
        json.dump({"factor_input": FACTOR_INPUT, "in_graph": placed}, f)
    return placed


def decayed_in_graph(directory: str) -> list:
    """The weights the training graph of the artifacts in `directory` decays (PLAN_FILE)."""
    try:
        with open(os.path.join(directory, PLAN_FILE)) as f:
            return list(json.load(f)["in_graph"])
    except FileNotFoundError:
        return []


def _flag(flags: list, mask: int) -> str:
    """The first flag in `mask`."""
    return flags[(mask & -mask).bit_length() - 1]


def _subgraph_names(graph) -> set:
    """Every tensor name an If/Loop/Scan body refers to, at any depth."""
    names = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                names |= _subgraph_names(sub)
    return names


class WeightDecay:
    """The decay, w ← w·(1 − lr·λ), from Python, for weights the training graph cannot decay
    (`add_weight_decay`); called between the forward-backward pass and the optimizer step, where
    the graph decays the others.

    On the CPU a parameter's numpy() is a view of the tensor the session trains, so the decay is
    an in-place multiply; each view is checked to write through once, and a parameter whose view
    does not (a device tensor) is copied out and back instead."""

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
        if lr != self._lr:
            self._lr, self._factor = lr, decay_factor(lr, self.weight_decay)
        factor = self._factor
        for view in self.views:
            np.multiply(view, factor, out=view)
        for p in self.copied:
            p.data = p.data * factor


def decay_factor(lr: float, weight_decay: float) -> np.float32:
    """1 − lr·λ as the float32 the weights are multiplied by, in the graph or from Python."""
    return np.float32(1.0 - lr * weight_decay)


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
