"""Turn a registry row into a ``Backbone``: uint8 RGB images in, feature vectors out.

Normalisation lives inside the backbone, so no caller can get preprocessing
wrong. ``features_from_normalized`` is the traceable part the exported graph
is built from: its input is what the graph's ``input`` tensor takes.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError, first_line, option_name, option_switch, option_value
from .architectures import ArchitectureSpec
from .downloads import ensure_model_file
from .graph_check import check_graph_def, check_saved_model


def normalize_pixels(images, mean: float, std: float):
    """``(pixel - mean) / std``, what every graph's ``input`` takes; for float32 arrays and tensors alike.

    Done inside a compiled function it runs on TensorFlow's threads, about 10x
    cheaper than in NumPy (2 ms an image).
    """
    return (images - mean) / std


@dataclass
class Backbone:
    """A frozen, pretrained feature extractor with its own preprocessing.

    ``feature_size`` is measured when the backbone loads (a TF-Hub module's
    is known only then); the registry row ``spec`` is never changed, so its
    ``cache_id`` is the same before and after loading.
    """
    spec: ArchitectureSpec
    features_from_normalized: Callable  # tf.Tensor [N, H, W, 3] normalised -> tf.Tensor [N, D]
    feature_size: int
    keras_model: object = None  # Keras rows: the model itself, whose top layers fine-tuning trains (cut.py)

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @functools.cached_property
    def _features_from_uint8(self) -> Callable:
        """uint8 images -> features, normalised inside the graph (see ``normalize_pixels``)."""
        import tensorflow as tf
        spec = self.spec

        @tf.function(input_signature=[tf.TensorSpec([None, spec.input_size, spec.input_size, 3], tf.uint8)],
                     autograph=False)
        def features(images):
            return self.features_from_normalized(
                normalize_pixels(tf.cast(images, tf.float32), spec.input_mean, spec.input_std))
        return features

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features ``[N, D]`` (float32) for a batch of uint8 RGB images."""
        import tensorflow as tf
        return self._features_from_uint8(tf.constant(images, tf.uint8)).numpy()


def load_graph_def(path: Path, trust_graph: bool = False):
    """Parse a binary GraphDef, with a one-line error when it is not one or, unless trusted, holds an op that
    does more than compute (``graph_check.py``): every frozen graph we run is loaded here, before it runs."""
    import tensorflow as tf
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except Exception as error:  # protobuf raises its own DecodeError family
        raise UserError(f"{path} is not a TensorFlow GraphDef (.pb) file ({type(error).__name__}); "
                        f"pass the frozen graph written by retrain") from None
    if not graph_def.node:
        raise UserError(f"{path} is an empty graph; pass the frozen graph written by retrain")
    if not trust_graph:
        check_graph_def(graph_def, path)
    return graph_def


def import_frozen_graph(graph_def):
    """The GraphDef imported into a wrapped function whose tensors can be pruned to callables (batch freed).

    A damaged or hand-edited graph is one ``UserError`` line, not a traceback.
    """
    import tensorflow as tf
    free_batch_dimension(graph_def)
    try:
        return tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise UserError(f"the graph cannot be loaded ({first_line(error, 200)}); pass a frozen graph "
                        f"written by retrain or TensorFlow-for-Poets") from None


def prune_graph(graph_def, input_name: str, output_name: str | tuple[str, ...]) -> Callable:
    """A callable from ``input_name`` to ``output_name`` of a frozen GraphDef (batch dimension freed).

    A tuple of output names gives a callable returning a tuple of tensors, from one import of the graph.
    """
    from tensorflow.python.eager.lift_to_graph import UnliftableError
    wrapped = import_frozen_graph(graph_def)
    names = output_name if isinstance(output_name, tuple) else (output_name,)
    try:
        tensor = wrapped.graph.get_tensor_by_name
        outputs = (tuple(tensor(tensor_name(name)) for name in output_name) if isinstance(output_name, tuple)
                   else tensor(tensor_name(output_name)))
        return wrapped.prune(tensor(tensor_name(input_name)), outputs)
    except (KeyError, ValueError) as error:
        raise UserError(f"the graph has no tensor {error}; check the input and output layer names") from None
    except UnliftableError:  # found by fuzzing: the output also needs another placeholder than the input
        raise UserError(f"{', '.join(names)} depends on an input other than {input_name}; check the input and output "
                        f"layer names, or pass a frozen graph written by retrain or TensorFlow-for-Poets") from None


def free_batch_dimension(graph_def) -> None:
    """Give placeholders a free batch dimension: Poets-era graphs fix it at 1, forcing one call per image."""
    for node in graph_def.node:
        if node.op == "Placeholder" and node.attr["shape"].shape.dim:
            node.attr["shape"].shape.dim[0].size = -1


def tensor_name(name: str) -> str:
    """``"a/b"`` -> ``"a/b:0"``; names with an output index are kept."""
    return name if ":" in name else f"{name}:0"


def flatten(fn: Callable) -> Callable:
    """``fn``'s outputs as one vector per image, ``[N, D]``, with ``D`` static whenever ``fn`` says it."""
    import tensorflow as tf

    def features(images):
        outputs = fn(images)
        size = outputs.shape[1:].num_elements()
        return tf.reshape(outputs, [-1, size] if size is not None else [tf.shape(outputs)[0], -1])
    return features


def _load_frozen_graph(spec: ArchitectureSpec, model_dir: Path, trust_graph: bool) -> Callable:
    path = ensure_model_file(spec.url, model_dir, spec.model_file, spec.archive_member, spec.file_hash)
    return flatten(prune_graph(load_graph_def(path, trust_graph), spec.input_tensor, spec.feature_tensor))


def keras_preprocess(spec: ArchitectureSpec) -> Callable:
    """A Keras row's own ``preprocess_input``."""
    import keras
    return getattr(keras.applications, _keras_module(spec.keras_model)).preprocess_input


def _load_keras(spec: ArchitectureSpec, model_dir: Path, trust_graph: bool) -> Callable:
    """Nothing to check whatever ``trust_graph`` says: our code builds the graph, the file holds only weights."""
    return keras_features(spec, str(ensure_model_file(spec.url, model_dir, spec.model_file, file_hash=spec.file_hash)))


def keras_features(spec: ArchitectureSpec, weights: str | None) -> Callable:
    """A Keras row's model, built as the registry says, as a features function (``keras_model`` attached).

    ``weights`` None gives random weights: the same network, for what does not depend on their values
    (tests, and timings where no weights can be downloaded).
    """
    import keras
    model = getattr(keras.applications, spec.keras_model)(
        include_top=False, weights=weights, pooling="avg", input_shape=(spec.input_size, spec.input_size, 3),
        **dict(spec.keras_kwargs))
    preprocess = keras_preprocess(spec)
    if spec.stem_input_scale:  # what Keras' weights="imagenet" adds as a layer (architectures.EFFICIENTNET_STEM_SCALE)
        layer, scale = spec.stem_input_scale
        kernel = model.get_layer(layer).kernel  # [height, width, input channels, filters]
        kernel.assign(kernel * np.asarray(scale, np.float32)[:, None])

    def features(images):
        return model(preprocess(images), training=False)
    features.keras_model = model  # see Backbone.keras_model
    return features


def _keras_module(model_name: str) -> str:
    """keras.applications submodule of a constructor: ResNet50 -> resnet50, MobileNetV2 -> mobilenet_v2."""
    import keras
    module = getattr(keras.applications, model_name).__module__.rsplit(".", 1)[-1]
    return {"resnet": "resnet50"}.get(module, module)


# A TFHUB_CACHE_DIR the user set themselves wins over --model_dir/tfhub.
_USER_TFHUB_CACHE_DIR = os.environ.get("TFHUB_CACHE_DIR")


def _load_tfhub(spec: ArchitectureSpec, model_dir: Path, trust_graph: bool) -> Callable:
    """Load a TF-Hub handle; URLs are downloaded once into ``--model_dir/tfhub`` and reused offline.

    The SavedModel is checked between download and load (``hub.load`` runs it).
    """
    import tensorflow_hub as hub
    os.environ["TFHUB_CACHE_DIR"] = _USER_TFHUB_CACHE_DIR or str(model_dir / "tfhub")
    handle = spec.url
    if "://" not in handle and not Path(handle).is_dir():
        raise UserError(f"{option_value('tfhub_module', handle)} is neither a URL nor a SavedModel folder")
    try:
        folder = hub.resolve(handle)
        if not trust_graph:
            check_saved_model(folder)
        module = hub.load(folder)
    except UserError:
        raise
    except Exception as error:  # hub/TF raise many types for an unreachable or bad module
        raise UserError(f"cannot load TF-Hub module {handle} ({first_line(error, 200)}); to work offline, download "
                        f"it on another machine and pass its SavedModel folder to "
                        f"{option_name('tfhub_module')}") from None
    return flatten(module)


LOADERS: dict[str, Callable[[ArchitectureSpec, Path, bool], Callable]] = {
    "frozen_graph": _load_frozen_graph,
    "keras": _load_keras,
    "tfhub": _load_tfhub,
}


def trust_graph_warning() -> str:
    """What retrain and extract_bottlenecks print before loading a backbone with ``trust_graph``."""
    return f"warning: {option_switch('trust_graph')}: the backbone's graph runs without its ops being checked"


def load_backbone(spec: ArchitectureSpec, model_dir: str | os.PathLike, trust_graph: bool = False) -> Backbone:
    """Fetch (if needed) and load ``spec``; check its ops (unless ``trust_graph``) and its feature size."""
    import tensorflow as tf
    features = LOADERS[spec.source](spec, Path(model_dir), trust_graph)
    compiled = _compiled(spec, features)
    try:
        size, = output_shape(compiled, spec.input_size)
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:  # TypeError: another fixed size
        raise UserError(f"backbone {spec.name} does not accept {spec.input_size}x{spec.input_size} images "
                        f"({first_line(error)})") from None
    if spec.feature_size and size != spec.feature_size:
        raise UserError(f"backbone {spec.name} gives {size}-d features, the registry says {spec.feature_size}; "
                        f"the file under {option_name('model_dir')} is not the expected model")
    return Backbone(spec, compiled, size, getattr(features, "keras_model", None))


def output_shape(function: Callable, input_size: int) -> tuple[int, ...]:
    """The shape ``function`` gives each ``input_size`` image, read from its traced graph, not from running it.

    A warm run never runs the backbone, and a first run costs a third of a
    second and a few hundred MB. Only a graph that hides the shape is run, on
    one blank image.
    """
    import tensorflow as tf
    images = tf.TensorSpec([None, input_size, input_size, 3], tf.float32)
    # A tf.function keeps this trace for its first call; wrapping it in another would trace the network twice.
    traced = function if hasattr(function, "get_concrete_function") else tf.function(function, autograph=False)
    shape = traced.get_concrete_function(images).output_shapes[1:]
    if not shape.is_fully_defined():
        shape = function(tf.zeros([1, input_size, input_size, 3])).shape[1:]
    return tuple(int(d) for d in shape)


def _compiled(spec: ArchitectureSpec, features: Callable) -> Callable:
    """``features`` as one tf.function for any batch size of ``spec``'s images (traced once)."""
    import tensorflow as tf
    signature = [tf.TensorSpec([None, spec.input_size, spec.input_size, 3], tf.float32)]
    return tf.function(features, input_signature=signature, autograph=False)


def compiled_backbone(spec: ArchitectureSpec, features: Callable, feature_size: int) -> Backbone:
    """A Backbone around the traceable ``features``, compiled once for any batch size."""
    return Backbone(spec, _compiled(spec, features), feature_size, getattr(features, "keras_model", None))
