"""The registry: one row per backbone, and nothing but data.

Each row says where the pretrained network comes from, how big its input is,
how pixels are normalised for it, and which tensor gives the features the new
softmax layer is trained on. Adding an architecture is adding a row; the code
that loads each *kind* of source lives in ``backbones.py``.

We use the pooled penultimate features (for example the 1024-d average pool
of MobileNet v1) rather than the 1001 ImageNet logits TensorFlow-for-Poets
used: they carry more information about the image and transfer better.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import UserError, by_spelling, option_name, option_value
from ..options import default

POETS_DOWNLOADS = "https://storage.googleapis.com/download.tensorflow.org/models/"
MOBILENET_V2_DOWNLOADS = "https://storage.googleapis.com/mobilenet_v2/checkpoints/"
KERAS_DOWNLOADS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_EFFICIENTNET_DOWNLOADS = "https://storage.googleapis.com/keras-applications/"  # EfficientNet v1's own bucket
TFLITE_ZOO = "https://storage.googleapis.com/download.tensorflow.org/models/tflite/model_zoo/upload_20180427/"

# TF-Hub's image convention: float pixels in [0, 1], 224x224 unless the module says otherwise.
HUB_MEAN, HUB_STD = 0.0, 255.0
HUB_IMAGE_SIZE = default("tfhub_image_size")
# TF-slim networks (MobileNet, Inception v4): pixels in [-1, 1].
SLIM_MEAN, SLIM_STD = 127.5, 127.5


@dataclass(frozen=True)
class ArchitectureSpec:
    """How to get and run one pretrained backbone.

    ``source`` picks the loader: ``frozen_graph`` (a GraphDef, usually inside
    a tarball, as TensorFlow-for-Poets downloaded), ``keras`` (a Keras
    Applications constructor plus its weights file) or ``tfhub`` (a TF-Hub
    handle or a local SavedModel folder). ``model_file`` is where the file
    lives under ``--model_dir``; ``file_hash`` (``sha256:…`` or ``md5:…``)
    verifies it where the publisher's digest is known. The exported graph's
    ``input`` tensor takes ``(pixel - input_mean) / input_std``.
    """
    name: str
    source: str
    url: str
    input_size: int
    input_mean: float
    input_std: float
    feature_size: int
    model_file: str = ""
    archive_member: str = ""
    file_hash: str = ""
    input_tensor: str = "input:0"
    feature_tensor: str = ""
    keras_model: str = ""
    keras_kwargs: Mapping[str, object] = field(default_factory=dict)
    alias_of: str = ""  # another name for that row's network: the two share one cache
    # Named convolutional blocks for --layer and Grad-CAM: block name -> its output tensor, in network order; the
    # last is the last convolutional tensor. Matched as a suffix, so it also finds the tensor in a retrained graph.
    conv_blocks: Mapping[str, str] = field(default_factory=dict)
    # Keras rows: the layers below the top N blocks, block_cuts[N - 1] for --fine_tune_blocks N (frozen-graph
    # rows take theirs from conv_blocks; see fine_tune_cuts).
    block_cuts: tuple[str, ...] = ()
    # Keras rows whose constructor scales the first convolution's input only for weights="imagenet" (EfficientNet
    # v1 multiplies its normalised pixels by these per channel): (layer, per-input-channel factors), folded into
    # that layer's kernel once the weights file is loaded (backbones.keras_features).
    stem_input_scale: tuple[str, tuple[float, ...]] = ()
    # What --list_architectures shows to help choose (none of it decides the vectors): published ImageNet top-1
    # (%, see PUBLISHED_TOP1_SOURCE), then from benchmarks/backbone_cost.py (MEASURED_COST) parameters without the
    # ImageNet classifier (millions), multiply-adds of one image (billions) and its CPU milliseconds; 0: unknown.
    imagenet_top1: float = 0.0
    parameters_m: float = 0.0
    multiply_adds_g: float = 0.0
    cpu_ms: float = 0.0

    @property
    def fine_tune_cuts(self) -> tuple[str, ...]:
        """Where --fine_tune_blocks N cuts: ``[N - 1]`` is the output of the block below the top N blocks."""
        return self.block_cuts or tuple(reversed(list(self.conv_blocks.values())[:-1]))

    @property
    def cache_id(self) -> str:
        """Names this backbone's bottleneck cache: same id <=> same vectors.

        Made only of what decides the vectors (the model file, the feature
        tensor, the input size and normalisation), so it is fixed before the
        backbone loads, an alias shares its target's cache, and a new download
        mirror does not recompute anything. A TF-Hub handle is the model
        itself, so it counts; a TF-Hub module's feature size is unknown until
        it loads, so its id leaves the size out.
        """
        identity = "|".join([self.source, self.url if self.source == "tfhub" else "", self.model_file,
                             self.archive_member, self.file_hash, self.feature_tensor, self.keras_model,
                             repr(sorted(self.keras_kwargs.items())), str(self.input_size), str(self.input_mean),
                             str(self.input_std)])
        digest = hashlib.sha1(identity.encode("utf-8")).hexdigest()[:8]
        safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.alias_of or self.name)[:60]
        size = f"-{self.feature_size}d" if self.feature_size else ""
        return f"{safe_name}{size}-{digest}"


def _mobilenet_v1_blocks() -> dict[str, str]:
    """TF-slim's MobileNet v1 scopes, the same at every width and size; checked on the bundled 1.0/224."""
    blocks = {"Conv2d_0": "MobilenetV1/MobilenetV1/Conv2d_0/Relu6:0"}
    blocks.update({f"Conv2d_{k}": f"MobilenetV1/MobilenetV1/Conv2d_{k}_pointwise/Relu6:0" for k in range(1, 14)})
    return blocks


def _mobilenet_v2_blocks() -> dict[str, str]:
    """TF-slim's MobileNet v2 scopes (each block ends in an ``output`` identity); not run here (no download)."""
    blocks = {"Conv": "MobilenetV2/Conv/Relu6:0", "expanded_conv": "MobilenetV2/expanded_conv/output:0"}
    blocks.update({f"expanded_conv_{k}": f"MobilenetV2/expanded_conv_{k}/output:0" for k in range(1, 17)})
    blocks["Conv_1"] = "MobilenetV2/Conv_1/Relu6:0"
    return blocks


def _inception_v4_blocks() -> dict[str, str]:
    """TF-slim's Inception v4 mixed blocks (each ends in a ``concat``); not run here (no download)."""
    names = ["Mixed_3a", "Mixed_4a", *(f"Mixed_5{c}" for c in "abcde"), *(f"Mixed_6{c}" for c in "abcdefgh"),
             *(f"Mixed_7{c}" for c in "abcd")]
    return {name: f"InceptionV4/InceptionV4/{name}/concat:0" for name in names}


# Keras Applications layers below the top blocks, from the top (--fine_tune_blocks); the tests check them on the
# models built with weights=None, since the weights cannot be downloaded here.
INCEPTION_V3_CUTS = tuple(f"mixed{i}" for i in range(9, -1, -1))  # the mixed modules
VGG16_CUTS = ("block4_pool", "block3_pool", "block2_pool", "block1_pool")  # the 5 conv blocks
# ResNet50's 16 residual units, which Keras itself names blocks (conv5_block3 is the last): a stage of them is a
# fifth of the network and of its weights, too coarse a step for a few hundred photos.
RESNET50_STAGES = (("conv2", 3), ("conv3", 4), ("conv4", 6), ("conv5", 3))  # (stage, residual units)
RESNET50_CUTS = tuple(reversed(["pool1_pool", *(f"{stage}_block{unit}_out" for stage, units in RESNET50_STAGES
                                                for unit in range(1, units + 1))][:-1]))


def _poets_mobilenet(width: str, size: int, quantized: bool) -> ArchitectureSpec:
    folder = f"mobilenet_v1_{width}_{size}"
    graph = "quantized_graph.pb" if quantized else "frozen_graph.pb"
    known_hashes = {("1.0", 224, False): "sha256:26e88ab36c4953bb05431075fbceaa933b7995e63845bb48dabc2a167e646695"}
    return ArchitectureSpec(
        name=f"mobilenet_{width}_{size}" + ("_quantized" if quantized else ""),
        source="frozen_graph", url=f"{POETS_DOWNLOADS}{folder}_frozen.tgz",
        model_file=f"{folder}/{graph}", archive_member=graph,
        file_hash=known_hashes.get((width, size, quantized), ""),
        input_size=size, input_mean=SLIM_MEAN, input_std=SLIM_STD,
        feature_tensor="MobilenetV1/Logits/AvgPool_1a/AvgPool:0", feature_size=1024,
        conv_blocks=_mobilenet_v1_blocks())


def slim_mobilenet_v2_features(width: float) -> int:
    """Pooled feature size of TF-slim's MobileNet v2 at ``width``.

    TF-slim scales the last 1x1 convolution's 1280 channels up with the width
    multiplier but never down (the published narrow checkpoints keep 1280),
    rounding as its ``make_divisible(v, 8)``: to the nearest multiple of 8,
    and up by 8 more if that lost over 10%.
    """
    wanted = 1280 * max(1.0, width)
    rounded = max(8, int(wanted + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * wanted else rounded


def _slim_mobilenet_v2(width: str, size: int) -> ArchitectureSpec:
    stem = f"mobilenet_v2_{width}_{size}"
    return ArchitectureSpec(
        name=stem, source="frozen_graph", url=f"{MOBILENET_V2_DOWNLOADS}{stem}.tgz",
        model_file=f"{stem}/{stem}_frozen.pb", archive_member=f"{stem}_frozen.pb",
        input_size=size, input_mean=SLIM_MEAN, input_std=SLIM_STD,
        feature_tensor="MobilenetV2/Logits/AvgPool:0", feature_size=slim_mobilenet_v2_features(float(width)),
        conv_blocks=_mobilenet_v2_blocks())


def _alias(name: str, target: ArchitectureSpec) -> ArchitectureSpec:
    """``name`` for ``target``'s network: the same row under another name, sharing its cache."""
    return dataclasses.replace(target, name=name, alias_of=target.name)


def _keras_application(name: str, keras_model: str, weights_url: str, file_hash: str, input_size: int,
                       feature_size: int, block_cuts: tuple[str, ...], **facts) -> ArchitectureSpec:
    """A Keras Applications model without its top, average-pooled; ``facts`` are further row fields.

    The graph input is raw pixels (mean 0, std 1): the model's own
    ``preprocess_input`` (RGB->BGR and ImageNet means, or [-1, 1] scaling)
    runs inside the graph, so Poets' label_image needs only --input_mean 0
    --input_std 1. EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3
    normalise inside the model itself (their ``preprocess_input`` passes
    pixels through), so the same holds for them.
    """
    return ArchitectureSpec(
        name=name, source="keras", keras_model=keras_model, url=weights_url,
        model_file=f"keras/{weights_url.rsplit('/', 1)[-1]}", file_hash=file_hash,
        input_size=input_size, input_mean=0.0, input_std=1.0, feature_size=feature_size, block_cuts=block_cuts,
        **facts)


def _keras_cuts(stem: str, blocks: list[str]) -> tuple[str, ...]:
    """--fine_tune_blocks cuts from the top: the output of every block but the last, then the stem's.

    A block name stands for its last layer (``cut.keras_block_output``): Keras names a block's layers by a
    common prefix, and whether the block ends in ``_add`` or ``_project_bn`` depends on its shapes.
    """
    return tuple(reversed([stem, *blocks[:-1]]))


def _efficientnet_blocks(repeats: tuple[int, ...]) -> list[str]:
    """Keras' EfficientNet (v1 and v2) block names: stage number, then a letter per repeat (block6h)."""
    return [f"block{stage}{chr(ord('a') + k)}" for stage, count in enumerate(repeats, 1) for k in range(count)]


def _mobilenet_v3_blocks(count: int) -> list[str]:
    return ["expanded_conv", *(f"expanded_conv_{k}" for k in range(1, count))]


def _convnext_cuts(name: str) -> tuple[str, ...]:
    """ConvNeXt's residual sums are not layers, so it cuts between its 4 stages (at the downsampling layers)."""
    return (*(f"{name}_downsampling_block_{k}" for k in (2, 1, 0)), f"{name}_stem")


# Keras builds EfficientNet v1 with weights="imagenet" with one more layer after its Normalization, scaling each
# channel by 1/sqrt(its ImageNet std) (keras issue tensorflow/tensorflow#49930); loading the same file by path
# leaves it out, so the rows fold it into the first convolution.
EFFICIENTNET_STEM_SCALE = ("stem_conv", tuple(1.0 / math.sqrt(std) for std in (0.229, 0.224, 0.225)))

# Published ImageNet top-1 (%): Keras Applications' table (https://keras.io/api/applications/), and for
# MobileNetV3 (not in that table) the table in Keras' own mobilenet_v3.py docstring.
PUBLISHED_TOP1_SOURCE = "https://keras.io/api/applications/ (MobileNetV3: keras/src/applications/mobilenet_v3.py)"
EFFICIENTNET_V2 = [  # (row, constructor, file, no-top md5, input size, features, blocks per stage, top-1)
    ("efficientnetv2_b0", "EfficientNetV2B0", "efficientnetv2-b0", "893217f2bb855e2983157299931e43ff", 224, 1280,
     (1, 2, 2, 3, 5, 8), 78.7),
    ("efficientnetv2_b1", "EfficientNetV2B1", "efficientnetv2-b1", "0e80663031ca32d657f9caa404b6ec37", 240, 1280,
     (2, 3, 3, 4, 6, 9), 79.8),
    ("efficientnetv2_b2", "EfficientNetV2B2", "efficientnetv2-b2", "1dfe2e7a5d45b6632553a8961ea609eb", 260, 1408,
     (2, 3, 3, 4, 6, 10), 80.5),
    ("efficientnetv2_b3", "EfficientNetV2B3", "efficientnetv2-b3", "f6abf7b5849ac99a89b50dd3fd532856", 300, 1536,
     (2, 3, 3, 5, 7, 12), 82.0),
    ("efficientnetv2_s", "EfficientNetV2S", "efficientnetv2-s", "af0682fb74e8c54910f2d4393339c070", 384, 1280,
     (2, 4, 4, 6, 9, 15), 83.9),
]
CONVNEXT = [  # (row, constructor, no-top sha256, top-1); 224x224 in, 768-d out
    ("convnext_tiny", "ConvNeXtTiny", "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1", 81.3),
    ("convnext_small", "ConvNeXtSmall", "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab", 82.3),
]
MOBILENET_V3 = [  # (row, constructor, weights variant, no-top md5, features, blocks, top-1); 224x224 in
    ("mobilenetv3_small", "MobileNetV3Small", "small_224_1.0_float", "d3e8ec802a04aa4fc771ee12a9a9b836", 576, 11,
     68.1),
    ("mobilenetv3_large", "MobileNetV3Large", "large_224_1.0_float", "07fb09a5933dd0c8eaafa16978110389", 960, 15,
     75.6),
]
# Per Keras row, from `python -m benchmarks.backbone_cost` (random weights: the cost depends on the shapes, not the
# values): parameters without the classifier, multiply-adds of one image (counted from the layer shapes: the
# figure to compare) and the median CPU milliseconds for one image on 2 cores shared with other jobs (load 2-5).
MEASURED_COST: dict[str, tuple[float, float, float]] = {  # (parameters M, multiply-adds G, CPU ms)
    "inception_v3": (21.80, 5.71, 211.9), "vgg16": (14.71, 15.35, 540.6), "resnet50": (23.59, 3.86, 217.3),
    "efficientnetv2_b0": (5.92, 0.72, 102.2), "efficientnetv2_b1": (6.93, 1.20, 199.2),
    "efficientnetv2_b2": (8.77, 1.70, 195.7), "efficientnetv2_b3": (12.93, 3.01, 263.5),
    "efficientnetv2_s": (20.33, 8.36, 784.7), "efficientnet_b0": (4.05, 0.38, 70.0),
    "convnext_tiny": (27.82, 4.45, 914.3), "convnext_small": (49.45, 8.68, 1063.2),
    "mobilenetv3_small": (0.94, 0.05, 13.7), "mobilenetv3_large": (3.00, 0.21, 24.3)}


def _measured(name: str) -> dict[str, float]:
    parameters, multiply_adds, milliseconds = MEASURED_COST.get(name, (0.0, 0.0, 0.0))
    return {"parameters_m": parameters, "multiply_adds_g": multiply_adds, "cpu_ms": milliseconds}


def _todays_keras_rows() -> list[ArchitectureSpec]:
    """EfficientNetV2, EfficientNet-B0, ConvNeXt and MobileNetV3: what a user would pick today."""
    rows = [_keras_application(name, model, f"{KERAS_DOWNLOADS}efficientnet_v2/{stem}_notop.h5", f"md5:{md5}",
                               size, features, _keras_cuts("stem_activation", _efficientnet_blocks(repeats)),
                               imagenet_top1=top1, **_measured(name))
            for name, model, stem, md5, size, features, repeats, top1 in EFFICIENTNET_V2]
    rows.append(_keras_application(
        "efficientnet_b0", "EfficientNetB0", f"{KERAS_EFFICIENTNET_DOWNLOADS}efficientnetb0_notop.h5",
        "md5:50bc09e76180e00e4465e1a485ddc09d", 224, 1280,
        _keras_cuts("stem_activation", _efficientnet_blocks((1, 2, 2, 3, 3, 4, 1))),
        stem_input_scale=EFFICIENTNET_STEM_SCALE, imagenet_top1=77.1, **_measured("efficientnet_b0")))
    rows += [_keras_application(name, model, f"{KERAS_DOWNLOADS}convnext/{name}_notop.h5", f"sha256:{sha256}", 224,
                                768, _convnext_cuts(name), imagenet_top1=top1, **_measured(name))
             for name, model, sha256, top1 in CONVNEXT]
    rows += [_keras_application(
        name, model, f"{KERAS_DOWNLOADS}mobilenet_v3/weights_mobilenet_v3_{variant}_no_top_v2.h5", f"md5:{md5}", 224,
        features, _keras_cuts("conv_bn", _mobilenet_v3_blocks(blocks)), imagenet_top1=top1, **_measured(name))
        for name, model, variant, md5, features, blocks, top1 in MOBILENET_V3]
    return rows


ARCHITECTURES: dict[str, ArchitectureSpec] = {spec.name: spec for spec in [
    # TensorFlow-for-Poets' 32 MobileNet v1 names: width x input size (x quantized).
    *(_poets_mobilenet(width, size, quantized)
      for width in ("1.0", "0.75", "0.50", "0.25") for size in (224, 192, 160, 128)
      for quantized in (False, True)),
    # Poets' original default. Poets' 2015 graph uses BatchNormWithGlobalNormalization,
    # which modern GraphDefs reject once re-exported, so we take Keras' InceptionV3
    # weights: same network family and the same 2048-d pooled features.
    _keras_application("inception_v3", "InceptionV3",
                       f"{KERAS_DOWNLOADS}inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                       "md5:bcbd6486424b2319ff4ef7d526e38f63", input_size=299, feature_size=2048,
                       block_cuts=INCEPTION_V3_CUTS, imagenet_top1=77.9, **_measured("inception_v3")),
    # "mobilenetv2" is MobileNet v2 1.4/224, as users of the Poets fork call it.
    _alias("mobilenetv2", _slim_mobilenet_v2("1.4", 224)),
    *(_slim_mobilenet_v2(width, 224) for width in ("1.4", "1.3", "1.0", "0.75", "0.5", "0.35")),
    ArchitectureSpec(
        name="inception_v4", source="frozen_graph", url=f"{TFLITE_ZOO}inception_v4_2018_04_27.tgz",
        model_file="inception_v4_2018_04_27/inception_v4.pb", archive_member="inception_v4.pb",
        input_size=299, input_mean=SLIM_MEAN, input_std=SLIM_STD,
        feature_tensor="InceptionV4/Logits/AvgPool_1a/AvgPool:0", feature_size=1536,
        conv_blocks=_inception_v4_blocks()),
    _keras_application("vgg16", "VGG16", f"{KERAS_DOWNLOADS}vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                       "md5:6d6bbae143d832006294945121d1f1fc", input_size=224, feature_size=512,
                       block_cuts=VGG16_CUTS, imagenet_top1=71.3, **_measured("vgg16")),
    _keras_application("resnet50", "ResNet50",
                       f"{KERAS_DOWNLOADS}resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                       "md5:4d473c1dd8becc155b73f8504c6f6626", input_size=224, feature_size=2048,
                       block_cuts=RESNET50_CUTS, imagenet_top1=74.9, **_measured("resnet50")),
    *_todays_keras_rows(),
]}

DEFAULT_ARCHITECTURE = default("architecture", "retrain")


def tfhub_spec(handle: str, input_size: int = HUB_IMAGE_SIZE) -> ArchitectureSpec:
    """A row for any TF-Hub image feature-vector module (URL or local folder).

    The feature size is read from the module when it loads.
    """
    name = "tfhub_" + re.sub(r"[^A-Za-z0-9]+", "_", handle.rstrip("/").split("://")[-1])[-50:]
    return ArchitectureSpec(name=name, source="tfhub", url=handle, input_size=input_size,
                            input_mean=HUB_MEAN, input_std=HUB_STD, feature_size=0)


def get_architecture(name: str) -> ArchitectureSpec:
    """The registry row called ``name``, or a UserError listing close names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, ARCHITECTURES, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        listing = by_spelling("run with --list_architectures to see all",
                              "see all in retrain.models.architectures.ARCHITECTURES")
        raise UserError(f"unknown {option_value('architecture', repr(name))}; {hint}{listing}, or use "
                        f"{option_name('tfhub_module')} for a TF-Hub feature-vector module") from None
