"""Xception: XceptionBackbone and XceptionImageClassifier, as keras-hub
0.32 builds them (``keras_hub/src/models/xception/xception_backbone.py``).

Plain Keras layers.  The first block is valid 3x3 convolutions (the first
strided), each post-activated; the last block separable convolutions, each
post-activated; the blocks between pre-activate their separable
convolutions (except the very first of the second block) and add a
residual: the block's input, or a strided 1x1 conv and BN of it where the
channels change.  Any block may end in a 3x3 stride-2 max pooling.  The
classifier is keras-hub's ``ImageClassifier``.
"""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from .config import dim
from .functional import Functional
from .image import Layers, data_format, image_classifier, image_shape


def _filters(cfg: dict) -> list[list[int]]:
    key = "stackwise_conv_filters"
    v = cfg.get(key)
    if not isinstance(v, list) or not v or not all(
            isinstance(b, list) and b for b in v):
        raise ConversionError(f"{key} = {v!r} is not a list of lists of "
                              "ints")
    return [[dim({key: f}, key) for f in b] for b in v]


@expander("keras_hub>XceptionBackbone")
def xception_backbone(cfg: dict) -> dict:
    blocks = _filters(cfg)
    pooling = cfg.get("stackwise_pooling")
    if not isinstance(pooling, list) or len(pooling) != len(blocks) or \
            not all(isinstance(p, bool) for p in pooling):
        raise ConversionError(f"stackwise_pooling = {pooling!r} is not one "
                              "bool per block of stackwise_conv_filters")
    fmt = data_format(cfg)
    shape = image_shape(cfg)
    g = Functional(cfg, "xception_backbone")
    k = Layers(g, fmt)
    images = g.input("input_layer", tuple(shape), "float32")
    x, channels = images, shape[-1 if fmt == "channels_last" else 0]
    last = len(blocks) - 1
    for i, filters in enumerate(blocks):
        residual, residual_channels = x, channels
        for j, f in enumerate(filters):
            if i == 0:
                name = f"block1_conv{j + 1}"
                x = k.conv(x, name, f, 3, 2 if j == 0 else 1)
                x = k.act(k.bn(x, f"{name}_bn"), f"{name}_act")
                continue
            name = f"block{i + 1}_sepconv{j + 1}"
            if i == last:
                x = k.conv(x, name, f, 3, padding="same",
                           cls="SeparableConv2D")
                x = k.act(k.bn(x, f"{name}_bn"), f"{name}_act")
                continue
            if i != 1 or j != 0:
                x = k.act(x, f"{name}_act")
            x = k.conv(x, name, f, 3, padding="same", cls="SeparableConv2D")
            x = k.bn(x, f"{name}_bn")
        channels = filters[-1]
        if pooling[i]:
            x = k.pool(x, f"block{i + 1}_pool", 3, 2, "same")
        if 0 < i < last:
            name = f"block{i + 1}_residual"
            if channels != residual_channels:
                residual = k.conv(residual, f"{name}_conv", channels, 1, 2,
                                  "same")
                residual = k.bn(residual, f"{name}_bn")
            x = g.layer("Add", f"{name}_add", {}, [x, residual])
    return g.build(x, images)


@expander("keras_hub>XceptionImageClassifier")
def xception_image_classifier(cfg: dict) -> dict:
    return image_classifier(cfg, "xception_image_classifier")
