"""ResNet: ResNetBackbone and ResNetImageClassifier, as keras-hub 0.32
builds them (``keras_hub/src/models/resnet/resnet_backbone.py``).

The backbone is a Functional graph of plain Keras layers (Conv2D,
BatchNormalization, ReLU, Add, pooling), so the expander only writes that
graph -- ResNet v1 (post-activation) and v2 (``use_pre_activation``), basic
and bottleneck blocks and their ``_vd`` variants (an average-pooled
shortcut) -- and the Keras layer rules convert it; the port takes images
channels-first.
"""
from __future__ import annotations

from ...read.expand import expander
from .functional import Functional
from .image import Layers, data_format, image_classifier, \
    image_shape, ints

BLOCKS = ("basic_block", "bottleneck_block", "basic_block_vd",
          "bottleneck_block_vd")


class _Net(Layers):
    def bn(self, x, name):
        return super().bn(x, name, epsilon=1e-5, momentum=0.9)

    def relu(self, x, name):
        return self.act(x, name)

    def avg_pool(self, x, stride):
        # keras-hub leaves it unnamed: Keras's own counter names it
        return self.pool(x, self.auto("average_pooling2d"), 2, stride,
                         "same", cls="Average")

    def block(self, x, name, filters, stride, shortcut_conv, pre, kind):
        bottleneck = kind.startswith("bottleneck")
        vd = kind.endswith("_vd")
        out = 4 * filters if bottleneck else filters
        preact = None
        if pre:
            preact = self.relu(self.bn(x, f"{name}_pre_activation_bn"),
                               f"{name}_pre_activation_relu")
        if shortcut_conv:
            s = preact if preact is not None else x
            if vd and preact is None and stride > 1:
                s = self.avg_pool(x, stride)
            s = self.conv(s, f"{name}_0_conv", out, 1, 1 if vd else stride)
            if not pre:
                s = self.bn(s, f"{name}_0_bn")
        else:
            s = x
        y = preact if preact is not None else x
        i = 1
        if bottleneck:
            y = self.relu(self.bn(self.conv(y, f"{name}_1_conv", filters, 1),
                                  f"{name}_1_bn"), f"{name}_1_relu")
            i = 2
        if stride > 1:
            y = self.pad(y, f"{name}_{i}_pad", 1)
        y = self.conv(y, f"{name}_{i}_conv", filters, 3, stride,
                      "valid" if stride > 1 else "same")
        y = self.relu(self.bn(y, f"{name}_{i}_bn"), f"{name}_{i}_relu")
        i += 1
        y = self.conv(y, f"{name}_{i}_conv", out, 1 if bottleneck else 3, 1,
                      "valid" if bottleneck else "same")
        if pre:
            return self.g.layer("Add", f"{name}_out", {}, [s, y])
        y = self.bn(y, f"{name}_{i}_bn")
        y = self.g.layer("Add", f"{name}_add", {}, [s, y])
        return self.relu(y, f"{name}_out")


@expander("keras_hub>ResNetBackbone")
def resnet_backbone(cfg: dict) -> dict:
    stem_filters = ints(cfg, "input_conv_filters")
    stem_kernels = ints(cfg, "input_conv_kernel_sizes")
    filters = ints(cfg, "stackwise_num_filters")
    blocks = ints(cfg, "stackwise_num_blocks")
    strides = ints(cfg, "stackwise_num_strides")
    if len(stem_filters) != len(stem_kernels) or not \
            len(filters) == len(blocks) == len(strides):
        raise ValueError("the stackwise / input_conv lists differ in length")
    kind = cfg.get("block_type")
    if kind not in BLOCKS:
        raise ValueError(f"block_type = {kind!r} (not one of {BLOCKS})")
    pre = cfg.get("use_pre_activation", False)
    if not isinstance(pre, bool):
        raise ValueError(f"use_pre_activation = {pre!r}")
    fmt = data_format(cfg)
    shape = image_shape(cfg)
    g = Functional(cfg, "res_net_backbone")
    net = _Net(g, fmt)
    images = g.input("input_layer", tuple(shape), "float32")
    x = net.pad(images, "conv1_pad", (stem_kernels[0] - 1) // 2)
    x = net.conv(x, "conv1_conv", stem_filters[0], stem_kernels[0], 2)
    for i in range(1, len(stem_filters)):
        x = net.relu(net.bn(x, f"conv{i}_bn"), f"conv{i}_relu")
        x = net.conv(x, f"conv{i + 1}_conv", stem_filters[i],
                     stem_kernels[i], 1, "same")
    n = len(stem_filters)
    if pre:
        pad = [[0, 0], [1, 1], [1, 1], [0, 0]] if fmt == "channels_last" \
            else [[0, 0], [0, 0], [1, 1], [1, 1]]
        x = g.op("Pad", x, constant_values=float("-inf"))
        g.layers[x.layer].entry["config"].update(mode="constant",
                                                 pad_width=pad)
    else:
        x = net.relu(net.bn(x, f"conv{n}_bn"), f"conv{n}_relu")
        x = net.pad(x, "pool1_pad", 1)
    x = g.layer("MaxPooling2D", "pool1_pool", {
        "pool_size": [3, 3], "strides": [2, 2], "padding": "valid",
        "data_format": fmt}, x)
    for s in range(len(filters)):
        for b in range(blocks[s]):
            x = net.block(x, f"stack{s}_block{b}", filters[s],
                          strides[s] if b == 0 else 1,
                          b == 0 and (kind != "basic_block" or s > 0),
                          pre, kind)
    if pre:
        x = net.relu(net.bn(x, "post_bn"), "post_relu")
    return g.build(x, images, names=["features"])


@expander("keras_hub>ResNetImageClassifier")
def resnet_image_classifier(cfg: dict) -> dict:
    return image_classifier(cfg, "res_net_image_classifier")
