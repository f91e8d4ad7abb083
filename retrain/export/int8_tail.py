"""int8 TFLite with a float tail: the backbone in integers, the head and the unknown score in float.

Full-integer conversion quantises every tensor with one scale per tensor, set
on the calibration images. The unknown score (a squared Mahalanobis distance:
whitened features minus each class mean, squared, summed) spans a range no
int8 scale holds, so it collapsed (every image scored 0 on the tiny test
model). The tail, every op downstream of the bottleneck vector, is a few
operations per image next to the backbone's millions: it stays float, and
the backbone, where the time goes, is int8.

The tail is found by structure, not by name: TensorFlow names the head's and
the score's MatMul, Sub and Square ops itself (``MatMul_1``, ``sub``), and
the converter fuses and renames them again, so only the contract's feature
size is reliable. The tail starts at the fully connected layers that read
the bottleneck, one vector of ``feature_size`` values per image (the head's
first layer and the score's whitening), and takes everything they feed.

A float whitening matrix is ``feature_size`` squared float32 values (4.2 MB
for MobileNet's 1,024 features, more than the int8 backbone: the file was
0.45x of the frozen graph, over the third we promise), so the tail's fully
connected weights are stored as int8 with one scale per output channel and
widened to float by a DEQUANTIZE op when the model runs: 0.27x of the graph,
the arithmetic still float, and on the flowers the same accuracy, unknown
flags and largest score difference as float32 weights (benchmarks/README.md,
Exports): the int8 features, not the weights, set the score's error.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np

from ..errors import UserError
from ..models.model_file import INTERPRETER_DEPRECATION

INT8_WEIGHT_LEVELS = 127  # symmetric int8: -127 .. 127, zero point 0 (TFLite's convention for weights)
PER_CHANNEL_DEQUANTIZE_VERSION = 5  # the DEQUANTIZE version TFLite assigns to per-channel int8 input
DEPRECATED_BUILTIN_LIMIT = 127  # the schema's old int8 field holds codes up to this; larger ones say "see builtinCode"


def convert_with_float_tail(converter, feature_size: int, representative: Callable[[], Iterable]) -> bytes:
    """Calibrate and quantise with ``converter`` (a v1 TFLite converter), keeping the tail float.

    Args:
        converter: a ``TFLiteConverter`` for the frozen graph, not yet converted; it is reconfigured here.
        feature_size: values per image in the bottleneck (the sidecar's); 0 when unknown (a Poets graph without
            a sidecar): then every fully connected layer reading one vector per image starts the tail.
        representative: the calibration images, as ``converter.representative_dataset`` takes them.

    Returns:
        The flatbuffer: int8 backbone, float input, outputs and tail, the tail's weights stored as int8.

    Raises:
        UserError: an output of the graph is not downstream of a fully connected layer on the bottleneck.
    """
    import tensorflow as tf
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    # The public way to keep named ops float: the debugger calibrates once, then quantises with a denylist.
    with warnings.catch_warnings():  # the debugger opens TensorFlow's deprecated interpreter on the model
        warnings.filterwarnings("ignore", message=INTERPRETER_DEPRECATION)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative)
        tail = tail_tensors(debugger.calibrated_model, feature_size)
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=sorted(tail))
    return store_tail_weights_as_int8(debugger.get_nondebug_quantized_model(), tail)


def tail_tensors(model: bytes, feature_size: int) -> set[str]:
    """Names of the tensors the tail's ops write in a TFLite ``model`` (float or calibrated).

    Raises:
        UserError: a model output is not among them.
    """
    parsed = _read(model)
    subgraph = parsed.subgraphs[0]
    tail: set[int] = set()
    for op in subgraph.operators:  # TFLite stores operators in execution order: producers come first
        if _reads_bottleneck(parsed, op, feature_size) or any(i in tail for i in op.inputs):
            tail.update(op.outputs)
    names = {subgraph.tensors[i].name.decode() for i in tail}
    outside = [subgraph.tensors[i].name.decode() for i in subgraph.outputs if i not in tail]
    if outside:
        raise UserError(f"cannot keep the head of the graph in float for int8: {', '.join(outside)} is not fed by a "
                        f"fully connected layer on the {feature_size or 'pooled'} features")
    return names


def store_tail_weights_as_int8(model: bytes, tail: set[str]) -> bytes:
    """``model`` with each float tail FC's constant weights stored as per-channel int8 plus a DEQUANTIZE op.

    Args:
        model: a quantised TFLite flatbuffer whose ``tail`` tensors are float.
        tail: names of the tensors the float tail's ops write (see ``tail_tensors``).

    Returns:
        The flatbuffer, computing the same float ops on weights rounded to 8 bits per output channel.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    parsed = _read(model)
    subgraph = parsed.subgraphs[0]
    unpacking = []
    for op in subgraph.operators:
        if not (_is_fully_connected(parsed, op) and subgraph.tensors[op.outputs[0]].name.decode() in tail):
            continue
        weights = subgraph.tensors[op.inputs[1]]
        values = _constant(parsed, weights)
        if values is None or weights.type != schema.TensorType.FLOAT32:
            continue
        values = values.view(np.float32).reshape(weights.shape)  # [output channels, inputs]
        scales = np.maximum(np.abs(values).max(axis=1), np.finfo(np.float32).tiny) / INT8_WEIGHT_LEVELS
        levels = np.clip(np.round(values / scales[:, None]), -INT8_WEIGHT_LEVELS, INT8_WEIGHT_LEVELS)
        packed = schema.TensorT()
        packed.name, packed.shape, packed.type = weights.name + b"_int8", weights.shape, schema.TensorType.INT8
        packed.buffer = _add_buffer(parsed, levels.astype(np.int8).tobytes())
        packed.quantization = schema.QuantizationParametersT()
        packed.quantization.scale = scales.astype(np.float32).tolist()
        packed.quantization.zeroPoint = [0] * len(scales)
        packed.quantization.quantizedDimension = 0
        parsed.buffers[weights.buffer].data = None  # the float weights now come from the DEQUANTIZE op
        subgraph.tensors.append(packed)
        unpack = schema.OperatorT()
        unpack.opcodeIndex = _opcode_index(parsed, schema.BuiltinOperator.DEQUANTIZE)
        unpack.inputs, unpack.outputs = [len(subgraph.tensors) - 1], [op.inputs[1]]
        unpacking.append(unpack)
    subgraph.operators[:0] = unpacking  # constants only: they may run first
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))


def _read(model: bytes):
    from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils.read_model_from_bytearray(bytearray(model))


def _opcode_index(parsed, builtin: int) -> int:
    """The index of ``builtin``'s operator code in ``parsed``, added if the model has none."""
    from tensorflow.lite.python import schema_py_generated as schema
    for index, code in enumerate(parsed.operatorCodes):
        if _builtin_code(code) == builtin:
            code.version = max(code.version, PER_CHANNEL_DEQUANTIZE_VERSION)
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode = builtin, min(builtin, DEPRECATED_BUILTIN_LIMIT)
    code.version = PER_CHANNEL_DEQUANTIZE_VERSION
    parsed.operatorCodes.append(code)
    return len(parsed.operatorCodes) - 1


def _constant(parsed, tensor) -> np.ndarray | None:
    """A constant tensor's raw bytes as uint8, or None for an activation."""
    data = parsed.buffers[tensor.buffer].data if tensor.buffer < len(parsed.buffers) else None
    return None if data is None or len(data) == 0 else np.asarray(data, dtype=np.uint8)


def _add_buffer(parsed, data: bytes) -> int:
    from tensorflow.lite.python import schema_py_generated as schema
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    parsed.buffers.append(buffer)
    return len(parsed.buffers) - 1


def _builtin_code(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)  # small codes live in the deprecated field too


def _is_fully_connected(parsed, op) -> bool:
    from tensorflow.lite.python import schema_py_generated as schema
    return _builtin_code(parsed.operatorCodes[op.opcodeIndex]) == schema.BuiltinOperator.FULLY_CONNECTED


def _reads_bottleneck(parsed, op, feature_size: int) -> bool:
    """A fully connected layer reading one vector of ``feature_size`` values per image (batch 1)."""
    if not _is_fully_connected(parsed, op):
        return False
    subgraph = parsed.subgraphs[0]
    weights = subgraph.tensors[op.inputs[1]].shape
    features = int(np.prod(subgraph.tensors[op.inputs[0]].shape))
    # a Dense layer inside a backbone (ConvNeXt's pointwise layers) reads every position: many vectors per image
    return len(weights) == 2 and features == weights[1] and (not feature_size or features == feature_size)
