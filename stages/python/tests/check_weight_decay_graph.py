#!/usr/bin/env python3
"""Checks where `regularize.add_weight_decay` puts the in-place decay of each weight in a training
graph, on hand-made graphs whose shapes generated artifacts rarely have: a weight whose readers
lead to different gradient accumulators, one read by a node no accumulator depends on, and one
read inside a subgraph. Exits non-zero on the first wrong placement.

    python check_weight_decay_graph.py

Needs numpy and onnx (the worker's environment); imports the worker from ../sluice_train.
"""
import json
import os
import sys
import tempfile

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sluice_train import regularize  # noqa: E402

FLAG = "_grad.accumulation.out"


def tensor(name, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, None)


def main() -> None:
    # W: read by two MatMuls whose results reach different accumulators (flags a and b), so its
    # decay must wait for both. U: read once, on the way to flag c. V: read by a node whose
    # result only leaves the graph (no accumulator after it). S: read inside an If's branch.
    branch = helper.make_graph(
        [helper.make_node("Identity", ["S"], ["s_out"])], "branch", [], [tensor("s_out")]
    )
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h1"]),
        helper.make_node("Identity", ["h1"], ["a" + FLAG]),
        helper.make_node("MatMul", ["x", "W"], ["h2"]),
        helper.make_node("Identity", ["h2"], ["b" + FLAG]),
        helper.make_node("MatMul", ["h1", "U"], ["h3"]),
        helper.make_node("Identity", ["h3"], ["c" + FLAG]),
        helper.make_node("MatMul", ["x", "V"], ["h4"]),
        helper.make_node("If", ["cond"], ["h5"], then_branch=branch, else_branch=branch),
        helper.make_node("Identity", ["h5"], ["d" + FLAG]),
    ]
    graph = helper.make_graph(
        nodes,
        "training",
        [tensor(n) for n in ("x", "W", "U", "V", "S")] + [tensor("cond", TensorProto.BOOL)],
        [tensor(n + FLAG, TensorProto.BOOL) for n in "abcd"] + [tensor("h4")],
    )
    directory = tempfile.mkdtemp()
    onnx.save(helper.make_model(graph), os.path.join(directory, "training_model.onnx"))

    placed = regularize.add_weight_decay(directory, ["W", "U", "V", "S"])
    check(placed == ["W", "U"], f"decayed in the graph: {placed}, expected W and U")
    with open(os.path.join(directory, regularize.PLAN_FILE)) as f:
        plan = json.load(f)
    check(plan["in_graph"] == ["W", "U"], f"plan file: {plan}")
    check(regularize.decayed_in_graph(directory) == ["W", "U"], "decayed_in_graph disagrees with the plan")

    model = onnx.load(os.path.join(directory, "training_model.onnx"))
    added = list(model.graph.node)[len(nodes):]
    producer = {out: node for node in added for out in node.output}
    writes = {node.input[0]: node for node in added if node.op_type == "InPlaceAccumulatorV2"}
    check(sorted(writes) == ["U", "W"], f"in-place writes to {sorted(writes)}")
    for name, node in writes.items():
        scaled = producer[node.input[1]]
        check(
            scaled.op_type == "Mul" and list(scaled.input) == [name, regularize.FACTOR_INPUT],
            f"{name} is overwritten with {scaled.op_type}{list(scaled.input)}, not {name}·factor",
        )
        check(node.output[0].endswith(FLAG), f"{name}'s decay flag {node.output[0]} is not hidden from the user")
    # U waits for flag c directly; W for a and b together.
    check(writes["U"].input[2] == "c" + FLAG, f"U's decay waits for {writes['U'].input[2]}")
    joined = producer.get(writes["W"].input[2])
    check(
        joined is not None and joined.op_type == "And" and sorted(joined.input) == ["a" + FLAG, "b" + FLAG],
        f"W's decay waits for {writes['W'].input[2]}, not for both a and b",
    )
    inputs = [i.name for i in model.graph.input]
    check(inputs[-1] == regularize.FACTOR_INPUT, f"graph inputs {inputs}: the factor must come last")
    outputs = {o.name for o in model.graph.output}
    check(all(node.output[0] in outputs for node in writes.values()), "a decay's flag is not a graph output")

    # Nothing to place: the graph is left as it was, and the plan says so.
    bare = tempfile.mkdtemp()
    onnx.save(helper.make_model(graph), os.path.join(bare, "training_model.onnx"))
    check(regularize.add_weight_decay(bare, ["V"]) == [], "V was placed")
    unchanged = onnx.load(os.path.join(bare, "training_model.onnx"))
    check(regularize.FACTOR_INPUT not in [i.name for i in unchanged.graph.input], "a graph with no decay takes the factor")
    check(regularize.decayed_in_graph(bare) == [], "plan of a graph with no decay")
    print("ok")


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"check_weight_decay_graph: {message}")


if __name__ == "__main__":
    main()
