"""Block boundaries of each backbone, counted from the top: where ``--fine_tune_blocks N`` cuts.

``cuts[N - 1]`` is the tensor (frozen graphs) or layer (Keras) *below* the
top N blocks: its activations are cached, and everything above it is
fine-tuned. A "block" is what the tutorials unfreeze: a depthwise-separable
block of MobileNet v1, an inverted-residual block of MobileNet v2, a mixed
module of Inception, a conv block of VGG16, a stage of ResNet50.

Only MobileNet v1 could be checked against its real graph here. The others
follow the publishers' naming: TF-slim's ``mobilenet_v1.py``/``mobilenet_v2.py``
/``inception_v4.py`` scopes (``Conv2d_<i>_pointwise``, ``expanded_conv_<i>/output``,
``Mixed_<i><x>/concat``) and Keras Applications' layer names, which the tests
check on models built with ``weights=None``.
"""
from __future__ import annotations


def mobilenet_v1_cuts() -> tuple[str, ...]:
    """13 depthwise-separable blocks on top of the first convolution ``Conv2d_0``."""
    outputs = ["MobilenetV1/MobilenetV1/Conv2d_0/Relu6:0"] + [
        f"MobilenetV1/MobilenetV1/Conv2d_{i}_pointwise/Relu6:0" for i in range(1, 13)]
    return tuple(reversed(outputs))


def mobilenet_v2_cuts() -> tuple[str, ...]:
    """17 inverted-residual blocks (``expanded_conv``, ``expanded_conv_1``..``_16``) and the final 1x1 ``Conv_1``.

    The top "block" is ``Conv_1``; the cut below it is the last residual block's output.
    """
    outputs = ["MobilenetV2/Conv/Relu6:0", "MobilenetV2/expanded_conv/output:0"] + [
        f"MobilenetV2/expanded_conv_{i}/output:0" for i in range(1, 17)]
    return tuple(reversed(outputs))


def inception_v4_cuts() -> tuple[str, ...]:
    """The mixed modules 3a..7d; a cut is the output of the module below."""
    modules = ["3a", "4a", "5a", "5b", "5c", "5d", "5e", "6a", "6b", "6c", "6d", "6e", "6f", "6g", "6h",
               "7a", "7b", "7c"]
    return tuple(f"InceptionV4/InceptionV4/Mixed_{m}/concat:0" for m in reversed(modules))


# Keras Applications layer names (their outputs are the cuts).
INCEPTION_V3_CUTS = tuple(f"mixed{i}" for i in range(9, -1, -1))
VGG16_CUTS = ("block4_pool", "block3_pool", "block2_pool", "block1_pool")
RESNET50_CUTS = ("conv4_block6_out", "conv3_block4_out", "conv2_block3_out", "pool1_pool")
