"""DenseNet: DenseNetBackbone and DenseNetImageClassifier, as keras-hub 0.32
builds them (``keras_hub/src/models/densenet/densenet_backbone.py``).

Plain Keras layers: a 7x7 stem, dense stacks of conv blocks (BN, ReLU, 1x1
conv to ``4 * growth_rate``, BN, ReLU, 3x3 conv to ``growth_rate``,
concatenated onto the block's input), transitions (BN, ReLU, 1x1 conv to
``int(channels * compression_ratio)``, 2x2 average pooling) between the
stacks; the classifier is keras-hub's ``ImageClassifier``.
"""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from .config import dim, number
from .functional import Functional
from .image import Layers, image_classifier, image_shape, ints

EPSILON = 1.001e-5  # keras-hub's BN_EPSILON


@expander("keras_hub>DenseNetBackbone")
def densenet_backbone(cfg: dict) -> dict:
    repeats = ints(cfg, "stackwise_num_repeats")
    growth = dim(cfg, "growth_rate", 32)
    ratio = number(cfg, "compression_ratio", 0.5)
    if not 0 < ratio <= 1:
        raise ConversionError(f"compression_ratio = {ratio!r} is not in "
                              "(0, 1]")
    shape = image_shape(cfg)
    g = Functional(cfg, "dense_net_backbone")
    k = Layers(g)
    images = g.input("input_layer", tuple(shape), "float32")
    x = k.conv(images, "conv1_conv", 64, 7, 2, "same")
    x = k.act(k.bn(x, "conv1_bn", EPSILON), "conv1_relu")
    x = k.pool(x, "pool1", 3, 2, "same")
    channels = 64
    for s, n in enumerate(repeats, 1):
        for b in range(1, n + 1):
            name = f"stack{s}_block{b}"
            y = k.act(k.bn(x, f"{name}_1_bn", EPSILON), f"{name}_1_relu")
            y = k.conv(y, f"{name}_1_conv", 4 * growth, 1)
            y = k.act(k.bn(y, f"{name}_2_bn", EPSILON), f"{name}_2_relu")
            y = k.conv(y, f"{name}_2_conv", growth, 3, 1, "same")
            x = g.layer("Concatenate", f"{name}_concat", {"axis": k.axis},
                        [x, y])
            channels += growth
        if s == len(repeats):
            break
        name = f"transition{s}"
        x = k.act(k.bn(x, f"{name}_bn", EPSILON), f"{name}_relu")
        channels = int(channels * ratio)
        if channels < 1:
            raise ConversionError(f"compression_ratio = {ratio!r} leaves "
                                  "no channels")
        x = k.conv(x, f"{name}_conv", channels, 1)
        x = k.pool(x, f"{name}_pool", 2, 2, cls="Average")
    x = k.act(k.bn(x, "bn", EPSILON), "relu")
    return g.build(x, images)


@expander("keras_hub>DenseNetImageClassifier")
def densenet_image_classifier(cfg: dict) -> dict:
    return image_classifier(cfg, "dense_net_image_classifier")
