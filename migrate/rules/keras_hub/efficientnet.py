"""EfficientNet: EfficientNetBackbone and EfficientNetImageClassifier, as
keras-hub 0.32 builds them (``keras_hub/src/models/efficientnet/``), for
the ``"v1"`` block type (EfficientNet B0-B7 and lite).

The v1 block is plain Keras layers: an optional 1x1 expansion, a zero
padded depthwise conv, squeeze-and-excite (global pooling, reshape, two
1x1 convs, multiply), the 1x1 projection, and where shapes allow a
per-sample (stochastic depth) dropout and the residual add.  Widths and
repeats are scaled and rounded as keras-hub's ``round_filters`` and
``round_repeats`` do.  The ``"unfused"``, ``"fused"`` and ``"cba"`` blocks
(EfficientNetV2) are keras-hub layer classes, refused by name.

keras-hub's ``get_config`` drops ``num_features``: a saved model is
rebuilt with the default 1280 (x width) ``top_conv`` filters, in Keras as
here; a file saved with another ``num_features`` does not reload in Keras,
and here its ``top_conv`` kernel does not fit (README, upstream limits).
"""
from __future__ import annotations

import math

from ...errors import ConversionError
from ...read.expand import expander
from .config import dim, number, rate
from .functional import Functional
from .image import Layers, activation_name, image_classifier, \
    image_shape, ints

NUM_FEATURES = 1280  # not saved by keras-hub 0.32: always the default
BLOCKS = {"unfused": "MBConvBlock", "fused": "FusedMBConvBlock",
          "cba": "CBABlock"}  # keras-hub layer classes


def _coefficients(cfg: dict, key: str, n: int) -> list[float]:
    """``stackwise_<key>s``, or the older scalar / list ``<key>``."""
    value = cfg.get(f"stackwise_{key}s")
    if value is None:
        value = cfg.get(key)
        if not isinstance(value, list):
            value = [value] * n
    if not isinstance(value, list) or len(value) < n:
        raise ConversionError(f"stackwise_{key}s = {value!r} is not one "
                              "number per stack")
    out = [number({key: v}, key, 0) for v in value]
    if not all(0 < v <= 64 for v in out):
        raise ConversionError(f"stackwise_{key}s = {value!r} is not in "
                              "(0, 64]")
    return out


def _list(cfg: dict, key: str, n: int, kind, default=None) -> list:
    value = cfg.get(key, default)
    if not isinstance(value, list) or len(value) < n or any(
            isinstance(v, bool) or not isinstance(v, kind)
            for v in value[:n]):
        raise ConversionError(f"{key} = {value!r} is not one value per "
                              "stack")
    return value


class _Rounding:
    """keras-hub's ``round_filters``."""

    def __init__(self, cfg: dict):
        self.divisor = dim(cfg, "depth_divisor", 8)
        self.min_depth = dim(cfg, "min_depth", 8)
        if cfg.get("use_depth_divisor_as_min_depth", False) is True:
            self.min_depth = self.divisor
        self.cap = cfg.get("cap_round_filter_decrease", False) is True

    def __call__(self, filters: int, width: float) -> int:
        filters = filters * width
        d = self.divisor
        new = max(self.min_depth, int(filters + d / 2) // d * d)
        if self.cap and new < 0.9 * filters:
            new += d
        return dim({"filters": int(new)}, "filters")


class _Net(Layers):
    def __init__(self, g, activation, projection, epsilon):
        super().__init__(g)
        self.activation, self.projection = activation, projection
        self.epsilon = epsilon

    def block(self, x, name, filters_in, filters_out, kernel, strides,
              expand, se_ratio, drop):
        """keras-hub's ``_apply_efficientnet_block``."""
        inputs, filters = x, filters_in * expand
        eps, act = self.epsilon, self.activation
        if expand != 1:
            x = self.conv(x, name + "expand_conv", filters, 1, 1, "same")
            x = self.bn(x, name + "expand_bn", eps, axis=3)
            x = self.act(x, name + "expand_activation", act)
        x = self.pad(x, name + "dwconv_pad", kernel // 2)
        x = self.conv(x, name + "dwconv", None, kernel, strides,
                      cls="DepthwiseConv2D", depth_multiplier=1)
        x = self.bn(x, name + "dwconv_bn", eps, axis=3)
        x = self.act(x, name + "dwconv_activation", act)
        if 0 < se_ratio <= 1:
            se = self.g.layer("GlobalAveragePooling2D", name + "se_squeeze",
                              {"data_format": self.fmt, "keepdims": False},
                              x)
            se = self.g.layer("Reshape", name + "se_reshape",
                              {"target_shape": [1, 1, filters]}, se)
            se = self.conv(se, name + "se_reduce",
                           max(1, int(filters_in * se_ratio)), 1, 1, "same",
                           use_bias=True, activation=act)
            se = self.conv(se, name + "se_expand", filters, 1, 1, "same",
                           use_bias=True, activation="sigmoid")
            x = self.g.layer("Multiply", name + "se_excite", {}, [x, se])
        x = self.conv(x, name + "project", filters_out, 1, 1, "same")
        x = self.bn(x, name + "project_bn", eps, axis=3)
        if self.projection:
            x = self.act(x, name + "projection_activation", self.projection)
        if strides == 1 and filters_in == filters_out:
            if drop > 0:
                x = self.g.layer("Dropout", name + "drop", {
                    "rate": drop, "noise_shape": [None, 1, 1, 1]}, x)
            x = self.g.layer("Add", name + "add", {}, [x, inputs])
        return x


@expander("keras_hub>EfficientNetBackbone")
def efficientnet_backbone(cfg: dict) -> dict:
    kernels = ints(cfg, "stackwise_kernel_sizes")
    n = len(kernels)
    repeats = ints(cfg, "stackwise_num_repeats")
    inputs = ints(cfg, "stackwise_input_filters")
    outputs = ints(cfg, "stackwise_output_filters")
    expansions = ints(cfg, "stackwise_expansion_ratios")
    strides = ints(cfg, "stackwise_strides")
    se = _list(cfg, "stackwise_squeeze_and_excite_ratios", n, (int, float))
    types = _list(cfg, "stackwise_block_types", n, (str,))
    force = _list(cfg, "stackwise_force_input_filters", n, (int,), [0] * 7)
    if min(len(v) for v in (repeats, inputs, outputs, expansions,
                            strides)) < n:
        raise ConversionError("the stackwise lists are shorter than "
                              "stackwise_kernel_sizes")
    for t in types[:n]:
        if t != "v1":
            what = BLOCKS.get(t)
            raise ConversionError(
                f"stackwise_block_types {t!r} " + (
                    f"(keras-hub's {what} layer, EfficientNetV2) is not "
                    "supported yet" if what else "is not a block type") +
                "; only 'v1' blocks expand")
    widths = _coefficients(cfg, "width_coefficient", n)
    depths = _coefficients(cfg, "depth_coefficient", n)
    fmt = cfg.get("data_format") or "channels_last"
    if fmt != "channels_last":  # keras-hub hard-codes channels_last layers
        raise ConversionError(f"data_format = {fmt!r} (EfficientNet's "
                              "blocks are channels_last only)")
    stem_padding = cfg.get("stem_conv_padding", "valid")
    if stem_padding not in ("valid", "same"):
        raise ConversionError(f"stem_conv_padding = {stem_padding!r}")
    activation = activation_name(cfg, "activation", "swish")
    momentum = number(cfg, "batch_norm_momentum", 0.9)
    epsilon = number(cfg, "batch_norm_epsilon", 1e-5)
    dropout = rate(cfg, "dropout", 0.2)
    round_filters = _Rounding(cfg)
    g = Functional(cfg, "efficient_net_backbone")
    k = _Net(g, activation,
             activation_name(cfg, "projection_activation", None), epsilon)
    images = g.input("input_layer", tuple(image_shape(cfg, "input_shape")),
                     "float32")
    x = images
    if cfg.get("include_stem_padding", True) is not False:
        x = k.pad(x, "stem_conv_pad", 1)
    x = k.conv(x, "stem_conv", round_filters(inputs[0], widths[0]), 3, 2,
               stem_padding)
    x = k.act(k.bn(x, "stem_bn", epsilon, momentum), "stem_activation",
              activation)
    block_id, blocks = 0, float(sum(repeats))
    for i in range(n):
        filters_in = round_filters(inputs[i], widths[i])
        filters_out = round_filters(outputs[i], widths[i])
        if not isinstance(force[i], int) or force[i] < 0:
            raise ConversionError("stackwise_force_input_filters = "
                                  f"{force!r}")
        count = int(math.ceil(depths[i] * repeats[i]))
        if count > 26:  # the block letters run a..z
            raise ConversionError(f"stack {i + 1} has {count} blocks "
                                  "(more than 26)")
        for j in range(count):
            if j > 0:
                filters_in = filters_out
            if force[i] > 0:
                filters_in = round_filters(force[i], widths[i])
            ratio = number({"se": se[i]}, "se", 0)
            k_drop = dropout * block_id / blocks
            x = k.block(x, f"block{i + 1}{chr(j + 97)}_", filters_in,
                        filters_out, kernels[i], strides[i] if j == 0 else 1,
                        expansions[i], ratio, k_drop)
            block_id += 1
    x = k.conv(x, "top_conv", round_filters(NUM_FEATURES, widths[-1]), 1, 1,
               "same")
    x = k.act(k.bn(x, "top_bn", epsilon, momentum), "top_activation",
              activation)
    return g.build(x, images)


@expander("keras_hub>EfficientNetImageClassifier")
def efficientnet_image_classifier(cfg: dict) -> dict:
    return image_classifier(cfg, "efficient_net_image_classifier")
