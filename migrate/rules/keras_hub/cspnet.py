"""CSPNet: CSPNetBackbone and CSPNetImageClassifier, as keras-hub 0.32
builds them (``keras_hub/src/models/cspnet/cspnet_backbone.py``), for
``stage_type="csp"`` (cross stages) of ``dark_block`` or
``bottleneck_block`` blocks: CSPDarkNet and CSPResNet(X).

Plain Keras layers and two Keras ops: the stem (strided convs, an optional
-inf padded max pooling), then per stage an optional down conv (or an
average-pooled 1x1 conv, ``avg_down``), a 1x1 expansion split in two
channel halves (``ops.split``), the blocks on the second half, a 1x1
transition, the halves concatenated and a last 1x1 transition.  The
``"dark"`` and ``"cs3"`` stage types and ``edge_block`` are refused by name.
"""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from .config import dim, number
from .functional import Functional
from .image import Layers, activation_name, data_format, image_classifier, \
    image_shape, ints

BLOCKS = ("dark_block", "bottleneck_block")


def _stretch(cfg: dict, key: str, n: int, read) -> list:
    """keras-hub's ``_pad_arg``: a value or list, cut or padded with its
    last item to ``n`` stages."""
    value = cfg.get(key, [1.0])
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise ConversionError(f"{key} = {value!r} is empty")
    value = value[:n] + [value[-1]] * max(0, n - len(value))
    return [read({key: v}, key) for v in value]


def _ratio(cfg: dict, key: str) -> float:
    value = number(cfg, key, 1.0)
    if not 0 < value <= 64:
        raise ConversionError(f"{key} = {value!r} is not in (0, 64]")
    return value


class _Net(Layers):
    def __init__(self, g, fmt, activation, groups):
        super().__init__(g, fmt)
        self.activation, self.groups = activation, groups

    def act(self, x, name, activation=None):
        if self.activation == "leaky_relu":
            return self.g.layer("LeakyReLU", name, {"negative_slope": 0.01},
                                x)
        return super().act(x, name, self.activation)

    def bn_act(self, x, bn, act):
        return self.act(self.bn(x, bn, epsilon=1e-5), act)

    def block(self, x, tag, kind, filters, bottle):
        hidden = int(round(filters * bottle))
        shortcut = x
        x = self.conv(x, f"{tag}_conv_1", hidden, 1)
        x = self.bn_act(x, f"{tag}_bn_1", f"{tag}_activation_1")
        bottleneck = kind == "bottleneck_block"
        x = self.conv(x, f"{tag}_conv_2", hidden if bottleneck else filters,
                      3, padding="same", groups=self.groups)
        x = self.bn_act(x, f"{tag}_bn_2", f"{tag}_activation_2")
        if bottleneck:
            x = self.conv(x, f"{tag}_conv_3", filters, 1)
            x = self.bn(x, f"{tag}_bn_3", epsilon=1e-5)
        x = self.g.layer("Add", f"{tag}_add", {}, [x, shortcut])
        if bottleneck:
            x = self.act(x, f"{tag}_activation_4")
        return x

    def stage(self, x, name, channels, filters, depth, strides, ratios,
              kind, avg_down, down_growth, cross_linear):
        expand_ratio, block_ratio, bottle = ratios
        expand = int(round(filters * expand_ratio))
        block_channels = int(round(filters * block_ratio))
        if expand < 2 or block_channels < 1:
            raise ConversionError(f"stage {name}: expand_ratio / "
                                  "block_ratio leave no channels")
        if strides != 1:
            if avg_down:
                if strides == 2:
                    x = self.pool(x, f"{name}_csp_avg_pool", 2, 2,
                                  cls="Average")
                x = self.conv(x, f"{name}_csp_conv_down_1", filters, 1,
                              groups=self.groups)
            else:
                if strides > 1:
                    x = self.pad(x, f"{name}_csp_conv_pad_1", 1)
                x = self.conv(x, f"{name}_csp_conv_down_1",
                              filters if down_growth else channels, 3,
                              strides, groups=self.groups)
            x = self.bn_act(x, f"{name}_csp_bn_1", f"{name}_csp_activation_1")
        x = self.conv(x, f"{name}_csp_conv_exp", expand, 1)
        x = self.bn(x, f"{name}_csp_bn_2", epsilon=1e-5)
        if not cross_linear:
            x = self.act(x, f"{name}_csp_activation_2")
        sections = expand // (expand // 2)
        if sections != 2 or expand % 2:
            raise ConversionError(f"stage {name}: {expand} expanded "
                                  "channels do not split in two halves")
        xs, xb = self.g.outputs(self.g.op("Split", x, options={
            "axis": self.axis, "indices_or_sections": sections}), 2)
        for i in range(depth):
            xb = self.block(xb, f"{name}_block_{i}_{kind}", kind,
                            block_channels, bottle)
        xb = self.conv(xb, f"{name}_csp_conv_transition_b", expand // 2, 1)
        xb = self.bn_act(xb, f"{name}_csp_transition_b_bn",
                         f"{name}_csp_transition_b_activation")
        out = self.g.layer("Concatenate", f"{name}_csp_conv_concat",
                           {"axis": self.axis}, [xs, xb])
        out = self.conv(out, f"{name}_csp_conv_transition", filters, 1)
        return self.bn_act(out, f"{name}_csp_transition_bn",
                           f"{name}_csp_transition_activation")


def _stem(k: _Net, x, cfg: dict):
    filters = cfg.get("stem_filters", 32)
    filters = ints(cfg, "stem_filters") if isinstance(filters, list) \
        else [dim(cfg, "stem_filters", 32)]
    kernel = dim(cfg, "stem_kernel_size", 3)
    strides = cfg.get("stem_strides", 2)
    if strides not in (1, 2, 4) or isinstance(strides, bool):
        raise ConversionError(f"stem_strides = {strides!r} (keras-hub: 1, "
                              "2 or 4)")
    pooling = cfg.get("stem_pooling")
    if pooling not in (None, "max") or (pooling and strides <= 2):
        raise ConversionError(f"stem_pooling = {pooling!r} (keras-hub: "
                              "None, or 'max' with stem_strides 4)")
    padding = cfg.get("stem_padding", "valid")
    if padding not in ("valid", "same"):
        raise ConversionError(f"stem_padding = {padding!r}")
    total, last = 1, len(filters) - 1
    for i, f in enumerate(filters):
        s = 2 if (i == 0 and strides > 1) or (
            i == last and strides > 2 and not pooling) else 1
        if s > 1:
            x = k.pad(x, f"csp_stem_pad_{i}", (kernel - 1) // 2)
        x = k.conv(x, f"csp_stem_conv_{i}", f, kernel, s,
                   padding if i == 0 else "valid")
        x = k.bn_act(x, f"csp_stem_bn_{i}", f"csp_stem_activation_{i}")
        total *= s
    if pooling == "max":
        pad = [[0, 0], [1, 1], [1, 1], [0, 0]] if k.fmt == "channels_last" \
            else [[0, 0], [0, 0], [1, 1], [1, 1]]
        x = k.g.op("Pad", x, options={"mode": "constant", "pad_width": pad},
                   constant_values=float("-inf"))
        x = k.pool(x, "csp_stem_pool", 3, 2)
        total *= 2
    return x, filters[-1], total


@expander("keras_hub>CSPNetBackbone")
def cspnet_backbone(cfg: dict) -> dict:
    stage_type, kind = cfg.get("stage_type"), cfg.get("block_type")
    if stage_type != "csp":
        raise ConversionError(f"stage_type = {stage_type!r} is not supported "
                              "yet (only 'csp' cross stages expand)")
    if kind not in BLOCKS:
        raise ConversionError(f"block_type = {kind!r} is not supported yet "
                              f"(only {' and '.join(BLOCKS)} expand)")
    depths = ints(cfg, "stackwise_depth")
    n = len(depths)
    filters = ints(cfg, "stackwise_num_filters")
    if len(filters) < n:
        raise ConversionError("stackwise_num_filters is shorter than "
                              "stackwise_depth")
    strides = _stretch(cfg, "stackwise_strides", n, dim)
    ratios = list(zip(*(_stretch(cfg, key, n, _ratio) for key in (
        "expand_ratio", "block_ratio", "bottle_ratio"))))
    flags = {}
    for key in ("avg_down", "down_growth", "cross_linear"):
        flags[key] = cfg.get(key, False)
        if not isinstance(flags[key], bool):
            raise ConversionError(f"{key} = {flags[key]!r} is not a bool")
    output_strides = dim(cfg, "output_strides", 32)
    fmt = data_format(cfg)
    shape = image_shape(cfg)
    g = Functional(cfg, "csp_net_backbone")
    k = _Net(g, fmt, activation_name(cfg, "activation", "leaky_relu"),
             dim(cfg, "groups", 1))
    images = g.input("input_layer", tuple(shape), "float32")
    x, channels, total = _stem(k, images, cfg)
    for i in range(n):
        if total >= output_strides and strides[i] > 1:
            # keras-hub turns the stride into a dilation here (and fails
            # on its own list of strides): nothing Keras builds
            raise ConversionError(f"output_strides = {output_strides} is "
                                  "reached before the last strided stage")
        total *= strides[i]
        x = k.stage(x, f"stage_{i}", channels, filters[i], depths[i],
                    strides[i], ratios[i], kind, **flags)
        channels = filters[i]
    return g.build(x, images)


@expander("keras_hub>CSPNetImageClassifier")
def cspnet_image_classifier(cfg: dict) -> dict:
    return image_classifier(cfg, "csp_net_image_classifier")
