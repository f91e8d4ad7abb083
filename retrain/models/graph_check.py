"""What a loaded graph may contain before it runs: pure computation only.

A model is a program. A frozen graph downloaded from anywhere can hold a
``WriteFile`` or ``PyFunc`` node on the path to ``final_result`` and
TensorFlow would run it. Every GraphDef, SavedModel and TFLite file is
checked against an allowlist of ops that only compute on tensors in memory:
the ops of every backbone in the registry, of our heads and exports, and of
TensorFlow-for-Poets' graphs (image decoding and resizing, the 8-bit ops of
its quantized MobileNets). ONNX files get the same treatment with their own
list (``ONNX_OPS``: standard-domain operators only, no control flow). Anything
else is refused with one line naming the op and the node, unless the user
passes ``--trust_graph``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from ..errors import UserError, option_switch

if TYPE_CHECKING:
    from onnx import ModelProto
    from tensorflow.core.framework.graph_pb2 import GraphDef
    from tensorflow.core.protobuf.meta_graph_pb2 import MetaGraphDef

LOOP_OPS = frozenset({"Exit", "NextIteration", "LoopCond"})  # TF1 loop ops, valid only after an Enter

PURE_OPS = frozenset({
    # plumbing and control flow (called functions are checked too)
    "Const", "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN", "NoOp", "StopGradient",
    "PreventGradient", "Snapshot", "EnsureShape", "CheckNumerics", "Assert", "PartitionedCall",
    "StatefulPartitionedCall", "If", "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase",
    "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond",
    # variables held in memory (SavedModels, TF1 hub modules)
    "VarHandleOp", "ReadVariableOp", "AssignVariableOp", "VarIsInitializedOp", "DisableCopyOnRead",
    "VariableV2", "Assign",
    # element-wise math and reductions (Erfc: ConvNeXt's exact GELU)
    "Add", "AddV2", "AddN", "Sub", "Mul", "RealDiv", "Div", "DivNoNan", "FloorDiv", "FloorMod", "Maximum",
    "Minimum", "Neg", "Abs", "Sign", "Square", "SquaredDifference", "Sqrt", "Rsqrt", "Reciprocal", "Exp", "Log",
    "Log1p", "Pow", "Tanh", "Sigmoid", "Erf", "Erfc", "Floor", "Ceil", "Round", "ClipByValue", "Cast", "Mean", "Sum",
    "Max", "Min", "Prod", "ArgMax", "ArgMin", "Cumsum", "MatMul", "BatchMatMul", "BatchMatMulV2",
    "BatchMatMulV3", "Einsum", "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual",
    "LogicalAnd", "LogicalOr", "LogicalNot", "Select", "SelectV2", "Range",
    # neural-network layers
    "Conv2D", "DepthwiseConv2dNative", "BiasAdd", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Softplus",
    "Softmax", "LogSoftmax", "AvgPool", "MaxPool", "MaxPoolV2", "FusedBatchNorm", "FusedBatchNormV2",
    "FusedBatchNormV3", "BatchNormWithGlobalNormalization", "LRN", "_FusedConv2D", "_FusedMatMul",
    "_FusedDepthwiseConv2dNative",
    # shapes and indexing
    "Reshape", "Squeeze", "ExpandDims", "Shape", "ShapeN", "Size", "Rank", "Pack", "Unpack", "Concat",
    "ConcatV2", "Split", "SplitV", "Slice", "StridedSlice", "Transpose", "Pad", "PadV2", "MirrorPad", "Tile",
    "Fill", "ZerosLike", "OnesLike", "Gather", "GatherV2", "ReverseV2", "BroadcastTo", "TopKV2", "OneHot",
    # Poets graphs: decoding the image string fed to DecodeJpeg/contents, resizing
    "DecodeJpeg", "DecodePng", "DecodeBmp", "DecodeGif", "ResizeBilinear", "ResizeNearestNeighbor",
    "ResizeBicubic", "ResizeArea",
    # Poets' quantized MobileNets and 8-bit rewritten graphs
    "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel", "FakeQuantWithMinMaxArgs", "QuantizeV2",
    "Dequantize", "QuantizedConv2D", "QuantizedRelu", "QuantizedRelu6", "QuantizedBiasAdd", "QuantizedAvgPool",
    "QuantizedMaxPool", "QuantizedMatMul", "QuantizedReshape", "QuantizedConcat", "QuantizedAdd", "QuantizedMul",
    "QuantizeDownAndShrinkRange", "RequantizationRange", "Requantize",
    "QuantizedBatchNormWithGlobalNormalization",
})
# A SavedModel's own saver reads its variables folder (and writes checkpoints); these ops are allowed only in
# the functions its saver_def names, never on a path that serving or feature extraction runs.
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
                            "StaticRegexFullMatch", "Save", "SaveSlices", "Restore", "RestoreSlice"})
# TFLite's builtin operators compute in memory; select-TF ("Flex") ops carry a TensorFlow op, checked as such.
TFLITE_FLEX_PREFIX = "Flex"
# ONNX operators of the standard domain that compute on tensors in memory: what tf2onnx makes of every op above
# that our exports use, and their close relatives. No control flow (Loop, If, Scan: subgraphs), no custom domains
# (com.microsoft and the like run code outside the standard), no random or sequence/optional/string ops.
ONNX_STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
ONNX_OPS = frozenset({
    "Constant", "ConstantOfShape", "Identity", "Cast", "CastLike", "Shape", "Size", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile",
    "Pad", "Range", "Where", "TopK", "ArgMax", "ArgMin", "OneHot", "DepthToSpace", "SpaceToDepth",
    "Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Sign", "Sqrt", "Reciprocal", "Exp", "Log", "Floor", "Ceil",
    "Round", "Erf", "Tanh", "Sigmoid", "Min", "Max", "Sum", "Mean", "Clip", "Mod", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "MatMul", "Gemm", "Einsum",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL2", "CumSum",
    "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Relu",
    "LeakyRelu", "Elu", "Selu", "PRelu", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Gelu", "Softmax",
    "LogSoftmax", "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "Resize",
    "QuantizeLinear", "DequantizeLinear",
})


def refusal(op: str, node: str, source: str | os.PathLike) -> UserError:
    return UserError(f"{source} contains op {op} (node {node}), which does more than compute (files, Python, "
                     f"I/O); refusing to run it. If you trust where it came from, pass {option_switch('trust_graph')}")


def check_graph_def(graph_def: GraphDef, source: str | os.PathLike) -> None:
    """Refuse a GraphDef (frozen graph) holding any op outside ``PURE_OPS``, functions included.

    Also refuse TF1 loop ops in a graph with no ``Enter`` to start a loop:
    TensorFlow crashes the process (a segmentation fault, found by fuzzing)
    on such a malformed graph instead of raising an error.
    """
    ops = list(_ops_of_graph(graph_def))
    for op, node in ops:
        if op not in PURE_OPS:
            raise refusal(op, node, source)
    if not any(op == "Enter" for op, _ in ops):
        for op, node in ops:
            if op in LOOP_OPS:
                raise UserError(f"{source} has the loop op {op} (node {node}) outside any loop: a damaged graph; "
                                f"pass a frozen graph written by retrain or TensorFlow-for-Poets")


def check_saved_model(directory: str | os.PathLike) -> None:
    """Refuse a SavedModel folder with an op outside ``PURE_OPS`` (``CHECKPOINT_OPS`` in its saver only)."""
    from tensorflow.core.protobuf import saved_model_pb2
    path = Path(directory) / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(path.read_bytes())
    except Exception as error:  # OSError, or protobuf's DecodeError family
        raise UserError(f"{directory} is not a SavedModel ({type(error).__name__} reading {path.name}); "
                        f"pass a SavedModel folder") from None
    for meta_graph in saved_model.meta_graphs:
        saver_functions = _saver_functions(meta_graph)
        for op, node in _ops_of_graph(meta_graph.graph_def, skip_functions=saver_functions):
            if op not in PURE_OPS:
                raise refusal(op, node, directory)
        for function in meta_graph.graph_def.library.function:
            if function.signature.name in saver_functions:
                for node in function.node_def:
                    if node.op not in PURE_OPS | CHECKPOINT_OPS:
                        raise refusal(node.op, f"{node.name} in function {function.signature.name}", directory)


def check_tflite_ops(ops: Iterable[tuple[str, str]], source: str | os.PathLike) -> None:
    """Refuse a TFLite model from its ``(op name, node)`` pairs: builtin names (``CONV_2D``) are pure;
    custom ops are refused unless they are select-TF ops (``FlexConv2D``) whose TensorFlow op is pure."""
    for op, node in ops:
        builtin = op.isupper()  # the schema's names: CONV_2D, FULLY_CONNECTED, ...
        if not builtin and op.removeprefix(TFLITE_FLEX_PREFIX) not in PURE_OPS:
            raise refusal(op, node, source)


def check_onnx_model(model: ModelProto, source: str | os.PathLike) -> None:
    """Refuse an ONNX model with a node outside ``ONNX_OPS`` or the standard domain (model-local functions too)."""
    nodes = [(node, "") for node in model.graph.node]
    nodes += [(node, f" in function {function.name}") for function in model.functions for node in function.node]
    for node, where in nodes:
        if node.domain not in ONNX_STANDARD_DOMAINS or node.op_type not in ONNX_OPS:
            op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            raise UserError(f"{source} contains ONNX op {op} (node {node.name or '?'}{where}), which is not among "
                            f"the pure computations retrain's exports use; refusing to run it. If you trust where it "
                            f"came from, pass {option_switch('trust_graph')}")


def _ops_of_graph(graph_def: GraphDef, skip_functions: frozenset[str] = frozenset()) -> Iterator[tuple[str, str]]:
    """(op, node description) for every node of the graph and of its function library."""
    for node in graph_def.node:
        yield node.op, node.name
    for function in graph_def.library.function:
        if function.signature.name not in skip_functions:
            for node in function.node_def:
                yield node.op, f"{node.name} in function {function.signature.name}"


def _saver_functions(meta_graph: MetaGraphDef) -> frozenset[str]:
    """Library functions reachable only from the saver's save and restore nodes, not from anything else."""
    graph_def = meta_graph.graph_def
    saver = meta_graph.saver_def
    saver_nodes = {name.split(":")[0] for name in (saver.save_tensor_name, saver.restore_op_name) if name}
    calls = {function.signature.name: _called_functions(function.node_def)
             for function in graph_def.library.function}
    from_saver = _reachable(_called_functions(n for n in graph_def.node if n.name in saver_nodes), calls)
    from_rest = _reachable(_called_functions(n for n in graph_def.node if n.name not in saver_nodes), calls)
    object_graph = meta_graph.object_graph_def
    from_rest |= _reachable(set(object_graph.concrete_functions), calls)
    return frozenset(from_saver - from_rest)


def _called_functions(nodes) -> set[str]:
    """Names of the functions that ``nodes`` call (``f`` attributes, ``then_branch``, ``body``, ...)."""
    names = set()
    for node in nodes:
        for value in node.attr.values():
            if value.HasField("func"):
                names.add(value.func.name)
            names.update(function.name for function in value.list.func)
    return names


def _reachable(roots: set[str], calls: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(calls.get(name, ()))
    return seen
