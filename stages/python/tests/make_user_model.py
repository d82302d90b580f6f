#!/usr/bin/env python3
"""Writes a small user model for the `train` stage's model.type onnx tests: an MLP
Gemm(inputs→hidden)-Relu-Gemm(hidden→outputs) whose input is called `input` and output `output`
(the worker renames them), with a symbolic batch dimension, opset 17, IR 8.

    python make_user_model.py OUT.onnx --inputs 4 --outputs 3 [--hidden 16] [--seed 0] [--fixed-batch]

Its initializers are `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias` (for model.trainable /
model.frozen). --fixed-batch pins the batch dimension to 1, as some exporters do. Needs numpy and
onnx only.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--inputs", type=int, required=True, help="features per sample")
    parser.add_argument("--outputs", type=int, required=True, help="classes (or 1 for regression)")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed-batch", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)

    def dense(name, fan_in, fan_out):
        bound = np.sqrt(6.0 / fan_in)
        w = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        return [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(np.zeros(fan_out, np.float32), f"{name}.bias")]

    batch = 1 if args.fixed_batch else "batch"
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], ["output"], transB=1),
        ],
        "user_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, args.inputs])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, args.outputs])],
        dense("fc1", args.inputs, args.hidden) + dense("fc2", args.hidden, args.outputs),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, args.out)


if __name__ == "__main__":
    main()
