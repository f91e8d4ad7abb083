"""Write what a retrain produces: frozen graph, labels file, sidecar, SavedModel.

The frozen graph keeps TensorFlow-for-Poets' contract: a float ``input``
tensor ``[N, H, W, 3]`` holding ``(pixel - mean) / std``, and a softmax named
``final_result`` (or ``--final_tensor_name``) whose columns follow the labels
file. The JSON sidecar beside the graph records size, mean, std and labels so
our own tools need no preprocessing flags. Every file is written under a
temporary name and renamed, so a crash never leaves a half-written output.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError
from ..files import atomic_write
from ..graph_contract import FINAL_TENSOR_NAME, INPUT_NAME, SERVING_SIGNATURE, UNKNOWN_SCORE_NAME, Sidecar
from ..models.backbones import Backbone, load_graph_def, prune_graph
from ..training.head import Head


def inference_function(backbone: Backbone, head: Head, final_tensor_name: str = FINAL_TENSOR_NAME):
    """Concrete function: normalised images named ``input`` -> softmax named ``final_tensor_name``.

    With ``head.unknown`` a second output, ``unknown_score`` ``[N]``, from the same bottleneck tensor.
    """
    import tensorflow as tf
    size = backbone.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)],
                 autograph=False)
    def classify(images):
        features = backbone.features_from_normalized(images)  # the bottleneck both outputs read
        logits = head.logits(features, name="final_logits")
        if head.temperature != 1.0:  # --calibrate; without it the graph is Poets' op for op
            logits = tf.divide(logits, tf.constant(head.temperature, tf.float32, name="temperature"),
                               name="calibrated_logits")
        probabilities = tf.nn.softmax(logits, name=final_tensor_name)
        if head.unknown is None:  # without --unknown_quantile the graph has Poets' one output
            return probabilities
        return probabilities, head.unknown.graph_scores(features, name=UNKNOWN_SCORE_NAME)

    return classify.get_concrete_function()


def export_frozen_graph(backbone: Backbone, head: Head, path: str | os.PathLike,
                        final_tensor_name: str = FINAL_TENSOR_NAME) -> None:
    """Freeze backbone + head into one GraphDef with Poets' tensor names."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    frozen = convert_variables_to_constants_v2(inference_function(backbone, head, final_tensor_name))
    graph_def = _name_captures_by_position(frozen.graph.as_graph_def())
    with atomic_write(path) as handle:
        handle.write(graph_def.SerializeToString(deterministic=True))


def _name_captures_by_position(graph_def):
    """Rename frozen variables from TensorFlow's process-wide counters (``"652"``) to ``frozen_capture_<n>``.

    Otherwise the same model gets different bytes depending on how much else
    the process traced first (a run that computed bottlenecks vs one that read
    them all from the cache), and ``--random_seed`` could not promise
    bit-identical graphs.
    """
    renames = {node.name: f"frozen_capture_{number}"
               for number, node in enumerate(n for n in graph_def.node if n.name.isdigit())}
    for node in graph_def.node:
        node.name = renames.get(node.name, node.name)
        for position, source in enumerate(node.input):
            control = "^" if source.startswith("^") else ""
            name, colon, port = source.lstrip("^").partition(":")
            if name in renames:
                node.input[position] = f"{control}{renames[name]}{colon}{port}"
    return graph_def


def write_labels(labels: list[str], path: str | os.PathLike) -> None:
    """One label per line, in the order of the softmax's columns."""
    with atomic_write(path, "w") as handle:
        handle.write("".join(f"{label}\n" for label in labels))


def sidecar_for(backbone: Backbone, labels: list[str], final_tensor_name: str = FINAL_TENSOR_NAME,
                fine_tuned_blocks: int = 0, temperature: float = 1.0,
                unknown_threshold: float | None = None) -> Sidecar:
    """Everything our tools need to feed a model exported from ``backbone`` (every format takes the same),
    what was fine-tuned, the temperature built into the graph and the unknown score's threshold (None: no
    ``unknown_score`` output)."""
    spec = backbone.spec
    return Sidecar(architecture=spec.name, input_layer=INPUT_NAME, output_layer=final_tensor_name,
                   input_height=spec.input_size, input_width=spec.input_size, input_mean=spec.input_mean,
                   input_std=spec.input_std, feature_size=backbone.feature_size, labels=list(labels),
                   fine_tuned_blocks=fine_tuned_blocks, temperature=temperature,
                   unknown_threshold=unknown_threshold)


def saved_model_from_graph(graph: str | os.PathLike, contract: Sidecar, directory: str | os.PathLike,
                           trust_graph: bool = False) -> None:
    """A TF2 SavedModel whose ``serving_default`` signature runs the frozen ``graph``: ``input`` -> ``output_layer``.

    With ``contract.unknown_threshold`` the signature has a second output, ``unknown_score``.

    Made from the written graph rather than the live backbone, so every backbone converts the same way
    (a Keras or TF-Hub backbone's variables would otherwise have to be tracked by the saved object) and
    the SavedModel holds exactly the frozen graph's weights.
    """
    import tensorflow as tf
    output_name = contract.output_layer.split(":")[0]
    names = (output_name, UNKNOWN_SCORE_NAME) if contract.unknown_threshold is not None else (output_name,)
    classify = prune_graph(load_graph_def(Path(graph), trust_graph), contract.input_layer, names)
    spec = tf.TensorSpec([None, contract.input_height, contract.input_width, 3], tf.float32, name=INPUT_NAME)
    write_saved_model(tf.function(lambda images: {name: tf.identity(output)
                                                  for name, output in zip(names, classify(images))},
                                  input_signature=[spec], autograph=False), directory)


def write_saved_model(serve: Callable, directory: str | os.PathLike) -> None:
    """Save the ``tf.function`` ``serve`` as a SavedModel's ``serving_default`` signature, atomically.

    Args:
        serve: the function to save; its input signature is the SavedModel's.
        directory: where the SavedModel goes (see ``saved_model_folder``).
    """
    with saved_model_folder(directory) as staging:
        import tensorflow as tf
        module = tf.Module()
        module.serve = serve
        # Serving needs no gradients, and EfficientNet's swish keeps a custom gradient in the frozen graph whose
        # captured constant TensorFlow cannot save.
        tf.saved_model.save(module, str(staging), signatures={SERVING_SIGNATURE: serve},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))


@contextlib.contextmanager
def saved_model_folder(directory: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``directory`` to write a SavedModel in, renamed to ``directory`` when done.

    A crash leaves no half model; an existing folder that is not a SavedModel is refused, not replaced.

    Args:
        directory: where the SavedModel goes.

    Returns:
        A context manager giving the temporary folder to fill.
    """
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()) and not (directory / "saved_model.pb").exists():
        raise UserError(f"{directory} exists and is not a SavedModel; choose a new or empty folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
