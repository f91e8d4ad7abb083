"""Cut a backbone below its top N blocks: a frozen lower part and a trainable upper part.

The lower part runs once per image (and augmented view); its activations at
the cut are cached like pooled bottlenecks, flattened to rows. The upper part
is rebuilt from the same weights as ``tf.Variable``s, so fine-tuning runs
only the top blocks on cached rows. For a frozen graph the upper sub-graph is
imported with its weight constants mapped to variables
(``import_graph_def(input_map=...)``: gradients flow through the import);
batch-norm moving statistics stay constants, so batch-norm stays in inference
mode. Export writes the tuned values back into the constants: the result is
an ordinary frozen graph.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError, option_name, option_value
from .architectures import ArchitectureSpec
from .backbones import Backbone, compiled_backbone, flatten, keras_preprocess, load_graph_def, output_shape, prune_graph
from .downloads import ensure_model_file

# Batch-norm statistics in TF-slim graphs: fixed while fine-tuning (inference mode), as the Keras guide advises.
FIXED_STATISTICS = ("moving_mean", "moving_variance")


@dataclass
class TrainableTop:
    """The top blocks as a function of cut activations, weights held in ``variables``."""
    cut_shape: tuple[int, ...]  # [H, W, C] of one image's activations at the cut
    variables: list  # the tf.Variables fine-tuning updates
    features: Callable  # [N, H*W*C] (any float dtype) -> [N, D] float32; builds ops inside a tf.function
    tuned_backbone: Callable[[], Backbone]  # the whole backbone with the current values of ``variables``

    @functools.cached_property
    def compiled_features(self) -> Callable:
        """``features`` compiled once: each trace imports the top blocks' graph, which takes a moment.

        The variables are read when it runs, so it follows fine-tuning.
        """
        import tensorflow as tf
        return tf.function(self.features, autograph=False, reduce_retracing=True)


@dataclass
class CutBackbone:
    """A backbone split below its top ``blocks`` blocks."""
    blocks: int
    lower: Backbone  # uint8 images -> flattened activations at the cut; ``lower.spec.cache_id`` names their cache
    top: TrainableTop


def cut_tensor(spec: ArchitectureSpec, blocks: int) -> str:
    """The tensor (or Keras layer) below the top ``blocks`` blocks, or a UserError saying how many there are."""
    cuts = spec.fine_tune_cuts
    if not cuts:
        raise UserError(f"{option_name('fine_tune_blocks')} is not available for {spec.name}: the registry has no "
                        f"block boundaries for it; use {option_value('fine_tune_blocks', '0')}")
    if not 1 <= blocks <= len(cuts):
        raise UserError(f"{option_value('fine_tune_blocks', str(blocks))} is out of range: {spec.name} has "
                        f"{len(cuts)} blocks that can be fine-tuned; choose 1 to {len(cuts)} (or 0 to train only "
                        f"the new layer)")
    return cuts[blocks - 1]


def cut_backbone(backbone: Backbone, blocks: int, model_dir: str | Path, trust_graph: bool = False) -> CutBackbone:
    """Split the loaded ``backbone`` below its top ``blocks`` blocks (``spec.fine_tune_cuts``)."""
    spec = backbone.spec
    cut = cut_tensor(spec, blocks)
    if spec.source == "frozen_graph":
        path = ensure_model_file(spec.url, Path(model_dir), spec.model_file, spec.archive_member, spec.file_hash)
        lower, top = _split_frozen_graph(backbone, load_graph_def(path, trust_graph), cut)
    elif spec.source == "keras":
        lower, top = _split_keras(backbone, cut)
    else:
        raise UserError(f"{option_name('fine_tune_blocks')} is not available for {spec.source} backbones; use "
                        f"{option_value('fine_tune_blocks', '0')}")
    return CutBackbone(blocks, lower, top)


def _lower_backbone(spec: ArchitectureSpec, cut: str, activations: Callable) -> tuple[Backbone, tuple[int, ...]]:
    """The frozen part as a Backbone of flattened activations; its cache id names the cut."""
    shape = output_shape(activations, spec.input_size)
    size = int(np.prod(shape))
    cut_spec = dataclasses.replace(spec, feature_tensor=cut, feature_size=size)  # the cache id names the cut point
    return compiled_backbone(cut_spec, flatten(activations), size), shape


def _split_frozen_graph(backbone: Backbone, graph_def, cut: str) -> tuple[Backbone, TrainableTop]:
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util
    spec = backbone.spec
    try:
        lower, shape = _lower_backbone(spec, cut, prune_graph(copy.deepcopy(graph_def), spec.input_tensor, cut))
    except UserError:
        raise UserError(f"the {spec.name} graph has no block boundary {cut}; the file under "
                        f"{option_name('model_dir')} is not the expected model") from None
    upper, weight_nodes = _upper_graph(graph_def, cut, spec.feature_tensor, spec.input_tensor)
    variables = {node.name: tf.Variable(tensor_util.MakeNdarray(node.attr["value"].tensor), name=node.name)
                 for node in weight_nodes}

    def features(activations):
        images = tf.reshape(tf.cast(activations, tf.float32), [-1, *shape])
        mapped = {cut: images, **{f"{name}:0": tf.convert_to_tensor(v) for name, v in variables.items()}}
        output, = tf.compat.v1.import_graph_def(upper, input_map=mapped, return_elements=[spec.feature_tensor],
                                                name="top")
        return tf.reshape(output, [tf.shape(output)[0], -1])

    def tuned_backbone() -> Backbone:
        tuned = copy.deepcopy(graph_def)
        for node in tuned.node:
            if node.name in variables:
                node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(variables[node.name].numpy()))
        return compiled_backbone(spec, flatten(prune_graph(tuned, spec.input_tensor, spec.feature_tensor)),
                                 backbone.feature_size)

    return lower, TrainableTop(shape, list(variables.values()), features, tuned_backbone)


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _upper_graph(graph_def, cut: str, output: str, input_tensor: str):
    """The nodes between the cut and ``output`` (the cut itself becomes a placeholder), and their weight constants.

    Weights are the float constants with at least one dimension, except
    batch-norm statistics; scalars (epsilons, Relu6 bounds) stay constants.
    """
    import tensorflow as tf
    nodes = {node.name: node for node in graph_def.node}
    cut_node, input_node = _node_name(cut), _node_name(input_tensor)
    needed, stack = set(), [_node_name(output)]
    while stack:
        name = stack.pop()
        if name in needed or name == cut_node:
            continue
        if name == input_node:
            raise UserError(f"{cut} is not a block boundary: part of the network above it bypasses it")
        needed.add(name)
        stack.extend(_node_name(source) for source in nodes[name].input)
    upper = tf.compat.v1.GraphDef()
    upper.versions.CopyFrom(graph_def.versions)
    placeholder = upper.node.add(name=cut_node, op="Placeholder")
    placeholder.attr["dtype"].type = tf.float32.as_datatype_enum
    weights = []
    for node in graph_def.node:  # graph order: the exported bytes do not depend on set order
        if node.name in needed:
            upper.node.add().CopyFrom(node)
            if _is_weight(node):
                weights.append(node)
    return upper, weights


def _is_weight(node) -> bool:
    import tensorflow as tf
    if node.op != "Const" or node.attr["dtype"].type != tf.float32.as_datatype_enum:
        return False
    if not node.attr["value"].tensor.tensor_shape.dim:
        return False
    return node.name.split("/")[-1] not in FIXED_STATISTICS


def keras_block_output(model, block: str):
    """The layer called ``block``, or else the last layer of the block Keras names so (``block6h`` ->
    ``block6h_add``): its layers' names are ``block`` + ``_`` + a name not starting with a digit, which keeps
    ``expanded_conv_1_*`` out of ``expanded_conv``. ValueError if there is neither.
    """
    names = [layer.name for layer in model.layers]
    if block in names:
        return model.get_layer(block)
    prefix = f"{block}_"
    inside = [name for name in names if name.startswith(prefix) and not name[len(prefix):][:1].isdigit()]
    if not inside:
        raise ValueError(f"no layer or block {block}")
    return model.get_layer(inside[-1])


def _split_keras(backbone: Backbone, cut: str) -> tuple[Backbone, TrainableTop]:
    """Keras rows: the loaded model's own layers above ``cut``; batch-norm runs with ``training=False``.

    The backbone's model is the one trained, so ``backbone`` itself exports the tuned weights.
    """
    import keras
    spec = backbone.spec
    model, preprocess = backbone.keras_model, keras_preprocess(spec)
    try:
        cut_output = keras_block_output(model, cut).output
    except ValueError:
        raise UserError(f"the {spec.name} model has no layer {cut}; the file under {option_name('model_dir')} is not "
                        f"the expected model") from None
    below = keras.Model(model.inputs, cut_output)
    above = keras.Model(cut_output, model.output)
    lower, shape = _lower_backbone(spec, cut, lambda images: below(preprocess(images), training=False))
    import tensorflow as tf

    def features(activations):
        return above(tf.reshape(tf.cast(activations, tf.float32), [-1, *shape]), training=False)

    return lower, TrainableTop(shape, list(above.trainable_variables), features, lambda: backbone)
