"""Forward models for the `train` stage: the built-in ones, built with onnx.helper, and checks on
a user's ONNX model.

Every model handed to ORT's artifact generator has one input, `features` (batch dimension `N`),
and one output, `logits` (classification) or `prediction` (regression), so the training loop,
the exported inference model and serving never depend on what a user called them.

Opset 17 and IR version 8: onnxruntime-training 1.19 reads IR ≤ 10, and onnx 1.16 writes 8 for
opset 17. `gelu` uses the com.microsoft contrib op (ONNX has Gelu only from opset 20), which ORT
both differentiates and serves.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
MAX_IR_VERSION = 10  # the newest IR that onnxruntime 1.19 loads
INPUT = "features"


class ModelError(Exception):
    """A problem with the model configuration or file, worded for the user."""


def output_name(task: str) -> str:
    return "logits" if task == "classification" else "prediction"


def build(spec: dict, features: str, sample_shape: tuple, out_size: int, task: str, seed: int):
    """Builds the built-in model `spec["type"]` for samples of `sample_shape` ([F] or [C, H, W],
    from the file `features`). Returns the model and the names of its trainable parameters."""
    g = _Graph(np.random.default_rng(seed))
    kind = spec["type"]
    x = INPUT
    if kind == "cnn":
        if len(sample_shape) != 3:
            raise ModelError(
                f"model.type cnn needs image features [N, C, H, W], but {features} has samples of "
                f"shape {list(sample_shape)}\nhint: use model.type mlp for tables"
            )
        x = _cnn_body(g, x, spec, sample_shape)
        width = spec["hidden"]
    else:
        if len(sample_shape) != 1:
            # Images into a dense model: flatten each sample to one row.
            x = g.node("Flatten", [x], axis=1)
        width = int(np.prod(sample_shape))
        if kind == "mlp":
            for hidden in spec["hidden"]:
                x = g.dense(x, width, hidden, init=_init_for(spec["activation"]))
                x = g.activation(x, spec["activation"])
                x = g.dropout(x, spec.get("dropout", 0.0))
                width = hidden
        elif kind not in ("linear", "logistic"):
            raise ModelError(f"unknown model.type `{kind}`; expected mlp, linear, logistic, cnn or onnx")
    g.dense(x, width, out_size, init="xavier", out=output_name(task))
    return g.model(sample_shape, out_size, output_name(task)), g.params


def _cnn_body(g: "_Graph", x: str, spec: dict, sample_shape: tuple) -> str:
    """conv(k×k, same padding)-relu-maxpool2 per entry of `channels`, flatten, FC `hidden`, relu,
    dropout. Returns the hidden activation."""
    channels, height, width = sample_shape
    kernel = spec["kernel"]
    if kernel % 2 == 0:
        raise ModelError(f"model.kernel must be odd (got {kernel}), so that padding keeps the image size")
    for out_channels in spec["channels"]:
        if height < 2 or width < 2:
            raise ModelError(
                f"model.channels has {len(spec['channels'])} conv blocks, each halving the image, "
                f"but {list(sample_shape)[1:]} images are too small for that\nhint: use fewer channels entries"
            )
        fan_in = channels * kernel * kernel
        w = g.weight("kaiming", (out_channels, channels, kernel, kernel), fan_in, out_channels * kernel * kernel)
        b = g.param(np.zeros(out_channels, np.float32), "b")
        pad = kernel // 2
        x = g.node("Conv", [x, w, b], kernel_shape=[kernel, kernel], pads=[pad] * 4)
        x = g.node("Relu", [x])
        x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        channels, height, width = out_channels, height // 2, width // 2
    x = g.node("Flatten", [x], axis=1)
    x = g.dense(x, channels * height * width, spec["hidden"], init="kaiming")
    x = g.node("Relu", [x])
    return g.dropout(x, spec.get("dropout", 0.0))


def _init_for(activation: str) -> str:
    # Kaiming keeps the variance through rectifiers; Xavier suits the saturating ones.
    return "kaiming" if activation in ("relu", "gelu") else "xavier"


class _Graph:
    """Accumulates nodes and seeded initializers; names are generated in order, so the same spec
    and seed always give byte-identical models (and artifact cache keys)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list = []
        self.inits: list = []
        self.params: list = []  # weights and biases, not the dropout constants
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def constant(self, value: np.ndarray, stem: str) -> str:
        name = self._name(stem)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, init: str, shape: tuple, fan_in: int, fan_out: int) -> str:
        bound = np.sqrt(6.0 / fan_in) if init == "kaiming" else np.sqrt(6.0 / (fan_in + fan_out))
        return self.param(self.rng.uniform(-bound, bound, shape).astype(np.float32), "w")

    def param(self, value: np.ndarray, stem: str) -> str:
        name = self.constant(value, stem)
        self.params.append(name)
        return name

    def node(self, op: str, inputs: list, out: str | None = None, domain: str = "", **attrs) -> str:
        out = out or self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], domain=domain, **attrs))
        return out

    def dense(self, x: str, fan_in: int, fan_out: int, init: str, out: str | None = None) -> str:
        w = self.weight(init, (fan_out, fan_in), fan_in, fan_out)  # [out, in], as torch stores it
        b = self.param(np.zeros(fan_out, np.float32), "b")
        return self.node("Gemm", [x, w, b], out=out, transB=1)

    def activation(self, x: str, name: str) -> str:
        ops = {"relu": ("Relu", ""), "tanh": ("Tanh", ""), "sigmoid": ("Sigmoid", ""), "gelu": ("Gelu", "com.microsoft")}
        if name not in ops:
            raise ModelError(f"unknown model.activation `{name}`; expected one of {sorted(ops)}")
        op, domain = ops[name]
        return self.node(op, [x], domain=domain)

    def dropout(self, x: str, rate: float) -> str:
        """Dropout with training_mode on; ORT's eval model clears it. The mask output is needed by
        the gradient builder."""
        if not rate:
            return x
        ratio = self.constant(np.array(rate, np.float32), "ratio")
        training = self.constant(np.array(True), "training")
        out = self._name("dropout")
        self.nodes.append(helper.make_node("Dropout", [x, ratio, training], [out, out + "_mask"]))
        return out

    def model(self, sample_shape: tuple, out_size: int, out_name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "sluice_train",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *sample_shape])],
            [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", out_size])],
            self.inits,
        )
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION, producer_name="sluice")
        onnx.checker.check_model(model)
        return model


def prepare_user_model(path: str, features: str, sample_shape: tuple, out_size: int, task: str, out_why: str):
    """Loads a user's model, checks it against the data (`features` names the file, for messages),
    and renames its input and output to the standard names with a symbolic batch dimension.
    Returns (model, float initializer names). `out_why` says why the output has `out_size` values."""
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf's errors are terse: name the file
        raise ModelError(f"cannot read the ONNX model {path}: {e}") from e
    if model.ir_version > MAX_IR_VERSION:
        raise ModelError(
            f"the ONNX model {path} has IR version {model.ir_version}; onnxruntime-training 1.19 reads "
            f"IR ≤ {MAX_IR_VERSION}\nhint: export it with onnx < 1.17 or convert it with "
            f"onnx.version_converter to opset ≤ 20"
        )
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"the ONNX model {path} must have exactly one input and one output (it has inputs "
            f"{[i.name for i in inputs]} and outputs {[o.name for o in graph.output]})"
        )
    inp, out = inputs[0], graph.output[0]
    dims = _dims(inp)
    if dims is not None:
        want = list(sample_shape)
        if len(dims) != len(want) + 1 or any(d is not None and d != w for d, w in zip(dims[1:], want)):
            width = "width" if len(want) == 1 else "shape"
            raise ModelError(
                f"the input `{inp.name}` of the model {path} has shape {_show(dims)}, but the features "
                f"have per-sample {width} {want[0] if len(want) == 1 else want} ({features} has shape "
                f"[N, {', '.join(map(str, want))}])\nhint: make the model's input [N, "
                f"{', '.join(map(str, want))}], or check that preprocessing produced the columns the model expects"
            )
    out_dims = _dims(out)
    if out_dims is not None and len(out_dims) == 2 and out_dims[1] is not None and out_dims[1] != out_size:
        raise ModelError(
            f"the output `{out.name}` of the model {path} has {out_dims[1]} values per sample, but it must "
            f"have {out_size}: {out_why}\nhint: change the model's last layer to {out_size} outputs"
        )
    _rename(graph, inp.name, INPUT)
    _rename(graph, out.name, output_name(task))
    inp.name, out.name = INPUT, output_name(task)
    for value in (inp, out):
        shape = value.type.tensor_type.shape
        if len(shape.dim):
            shape.dim[0].Clear()
            shape.dim[0].dim_param = "N"
    # Intermediate shapes may pin the old batch size; ORT re-infers them.
    del graph.value_info[:]
    floats = [i.name for i in graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)]
    return model, floats


def check_output_size(actual: tuple, out_size: int, path: str, out_why: str) -> None:
    """Checks the output shape of a dry run of the user's model (for outputs with symbolic dims)."""
    if len(actual) != 2 or actual[1] != out_size:
        raise ModelError(
            f"the output of the model {path} has shape {list(actual)} for a batch of 2 samples, but it must "
            f"be [N, {out_size}]: {out_why}\nhint: change the model's last layer to {out_size} outputs"
        )


def trainable_names(floats: list, trainable: list | None, frozen: list, path: str) -> list:
    """Every float initializer unless `trainable` lists some, minus `frozen`; unknown names are errors."""
    for field, names in (("model.trainable", trainable or []), ("model.frozen", frozen)):
        unknown = [n for n in names if n not in floats]
        if unknown:
            raise ModelError(
                f"{field} names {unknown}, which are not float initializers of the model {path}; "
                f"it has {floats[:20]}{' …' if len(floats) > 20 else ''}"
            )
    chosen = [n for n in (trainable if trainable is not None else floats) if n not in set(frozen)]
    if not chosen:
        raise ModelError(f"nothing to train in the model {path}: model.trainable/model.frozen leave no parameters")
    return chosen


def append_target_inverse(path: str, mean: float, std: float) -> None:
    """Rewrites the exported regression model at `path` so that `prediction` is in target units:
    the trained output (standardized targets) times `std` plus `mean`."""
    model = onnx.load(path)
    graph = model.graph
    name = output_name("regression")
    scaled = name + "_standardized"
    _rename(graph, name, scaled)
    graph.output[0].name = name
    graph.initializer.extend([
        numpy_helper.from_array(np.array(std, np.float32), "target_std"),
        numpy_helper.from_array(np.array(mean, np.float32), "target_mean"),
    ])
    graph.node.extend([
        helper.make_node("Mul", [scaled, "target_std"], [scaled + "_times_std"]),
        helper.make_node("Add", [scaled + "_times_std", "target_mean"], [name]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _dims(value) -> list | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _show(dims: list) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def _rename(graph, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
