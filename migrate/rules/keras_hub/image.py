"""What keras-hub's image models share: the ``image_shape`` argument, the
Keras auto-names of the layers a backbone leaves unnamed, and the
``ImageClassifier`` head (``keras_hub/src/models/image_classifier.py``)
that ResNet, DenseNet, Xception and EfficientNet classifiers use as it is.
"""
from __future__ import annotations

from ...errors import ConversionError
from .config import backbone, dim, rate
from .functional import Functional, Ref

FORMATS = ("channels_last", "channels_first")
# Keras saves an activation under its function's name
ACTIVATIONS = {"swish": "silu", "hard_swish": "hard_silu"}


def image_shape(cfg: dict, key: str = "image_shape") -> list:
    """The backbone's (H, W, C) input shape; H and W may be None."""
    shape = cfg.get(key, [None, None, 3])
    if not isinstance(shape, list) or len(shape) != 3:
        raise ConversionError(f"{key} = {shape!r} is not (H, W, C)")
    for v in shape:
        if v is not None:
            dim({key: v}, key)
    return shape


def ints(cfg: dict, key: str, default=None) -> list[int]:
    """A non-empty list of sizes (``stackwise_num_filters``)."""
    v = cfg.get(key, default)
    if not isinstance(v, list) or not v:
        raise ConversionError(f"{key} = {v!r} is not a list of ints")
    return [dim({key: x}, key) for x in v]


def same_length(cfg: dict, *keys: str) -> None:
    if len({len(cfg[k]) for k in keys}) != 1:
        raise ConversionError(f"{', '.join(keys)} differ in length")


def data_format(cfg: dict) -> str:
    """keras-hub's image backbones do not save ``data_format`` (README):
    a config without it was built channels_last (Keras's default)."""
    fmt = cfg.get("data_format") or "channels_last"
    if fmt not in FORMATS:
        raise ConversionError(f"data_format = {fmt!r} (not one of "
                              f"{FORMATS})")
    return fmt


def activation_name(cfg: dict, key: str, default):
    """An activation argument as Keras saves it (``"swish"`` is
    ``"silu"``); None stays None."""
    value = cfg.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConversionError(f"{key} = {value!r} is not an activation name")
    return ACTIVATIONS.get(value, value)


class AutoNames:
    """Keras's own names for unnamed layers, one counter per class, as a
    fresh process gives them when the model is reloaded
    (``average_pooling2d``, ``average_pooling2d_1``, ...)."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, base: str) -> str:
        k = self.counts.get(base, 0)
        self.counts[base] = k + 1
        return f"{base}_{k}" if k else base


def task(cfg: dict, default_name: str):
    """The task's graph so far: ``(g, images, features, backbone config,
    data_format)``, the backbone (a nested, expandable entry) called on
    the task's image input."""
    entry = backbone(cfg)
    inner = entry.get("config", {})
    key = "input_shape" if "input_shape" in inner else "image_shape"
    g = Functional(cfg, cfg.get("name") or default_name)
    images = g.input("input_layer", tuple(image_shape(inner, key)),
                     "float32")
    return g, images, g.model(entry, images), inner, data_format(inner)


def pooler(g: Functional, x: Ref, pooling, fmt: str,
           allowed=("avg", "max")) -> Ref:
    """``pooling="avg"`` or ``"max"``: the global pooling layer ``pooler``."""
    if pooling not in allowed:
        raise ConversionError(f"pooling = {pooling!r} (keras-hub: "
                              f"{' or '.join(map(repr, allowed))})")
    cls = "GlobalAveragePooling2D" if pooling == "avg" \
        else "GlobalMaxPooling2D"
    return g.layer(cls, "pooler", {"data_format": fmt, "keepdims": False}, x)


def predictions(cfg: dict) -> dict:
    """The config of the ``predictions`` Dense layer."""
    return {"units": dim(cfg, "num_classes"),
            "activation": cfg.get("activation") or "linear"}


def image_classifier(cfg: dict, default_name: str) -> dict:
    """keras-hub's ``ImageClassifier``: backbone, ``pooler``,
    ``output_dropout``, ``predictions``."""
    g, images, x, _, fmt = task(cfg, default_name)
    x = pooler(g, x, cfg.get("pooling", "avg"), fmt)
    x = g.layer("Dropout", "output_dropout", {"rate": rate(cfg, "dropout")},
                x)
    x = g.layer("Dense", "predictions", predictions(cfg), x)
    return g.build(x, images)


class Layers:
    """The plain Keras layers keras-hub's image backbones are made of,
    with the configs Keras writes for them."""

    def __init__(self, g: Functional, fmt: str = "channels_last"):
        self.g, self.fmt = g, fmt
        self.axis = -1 if fmt == "channels_last" else 1
        self.auto = AutoNames()

    def conv(self, x, name, filters, kernel, strides=1, padding="valid",
             use_bias=False, activation="linear", cls="Conv2D", groups=1,
             **extra):
        cfg = {"kernel_size": [kernel, kernel], "strides": [strides, strides],
               "padding": padding, "data_format": self.fmt,
               "dilation_rate": [1, 1], "activation": activation,
               "use_bias": use_bias, **extra}
        if cls == "Conv2D":
            cfg.update(filters=filters, groups=groups)
        elif cls == "SeparableConv2D":
            cfg.update(filters=filters, depth_multiplier=1)
        return self.g.layer(cls, name, cfg, x)

    def bn(self, x, name, epsilon=1e-3, momentum=0.99, axis=None):
        return self.g.layer("BatchNormalization", name, {
            "axis": self.axis if axis is None else axis,
            "momentum": momentum, "epsilon": epsilon, "center": True,
            "scale": True}, x)

    def act(self, x, name, activation="relu"):
        return self.g.layer("Activation", name,
                            {"activation": activation}, x)

    def pool(self, x, name, size, strides, padding="valid", cls="Max"):
        return self.g.layer(f"{cls}Pooling2D", name, {
            "pool_size": [size, size], "strides": [strides, strides],
            "padding": padding, "data_format": self.fmt}, x)

    def pad(self, x, name, p):
        return self.g.layer("ZeroPadding2D", name, {
            "padding": [[p, p], [p, p]], "data_format": self.fmt}, x)
