"""VGG: VGGBackbone and VGGImageClassifier, as keras-hub 0.32 builds them
(``keras_hub/src/models/vgg/``).

The backbone is stacks of relu 3x3 "same" convolutions, each ending in a
2x2 max pooling.  The classifier has its own head, a ``keras.Sequential``
named ``head``: with ``pooling="flatten"``, Flatten, the relu Dense layers
``fc1`` and ``fc2`` (``pooling_hidden_dim`` units) around the dropout and
``predictions``; with ``"avg"`` / ``"max"``, ``fc1`` a 7x7 valid relu conv,
the dropout, ``fc2`` a 1x1 relu conv, the global pooling, ``predictions``.
"""
from __future__ import annotations

from ...errors import ConversionError
from ...read.expand import expander
from .config import dim, rate
from .functional import Functional
from .image import Layers, image_shape, ints, pooler, predictions, task

POOLING = ("avg", "max", "flatten")


@expander("keras_hub>VGGBackbone")
def vgg_backbone(cfg: dict) -> dict:
    repeats = ints(cfg, "stackwise_num_repeats")
    filters = ints(cfg, "stackwise_num_filters")
    if len(repeats) != len(filters):
        raise ConversionError("stackwise_num_repeats and "
                              "stackwise_num_filters differ in length")
    # its get_config saves neither name nor dtype: a reload names it so
    g = Functional(cfg, "vgg_backbone")
    k = Layers(g)
    images = g.input("input_layer", tuple(image_shape(cfg)), "float32")
    x = images
    for s, (n, f) in enumerate(zip(repeats, filters), 1):
        for i in range(1, n + 1):
            x = k.conv(x, f"block{s}_conv{i}", f, 3, 1, "same",
                       use_bias=True, activation="relu")
        x = k.pool(x, f"block{s}_pool", 2, 2)
    return g.build(x, images)


@expander("keras_hub>VGGImageClassifier")
def vgg_image_classifier(cfg: dict) -> dict:
    entry = cfg.get("backbone")
    if isinstance(entry, dict) and isinstance(entry.get("config"), dict) \
            and "name" not in entry["config"]:  # see vgg_backbone
        cfg = dict(cfg, backbone=dict(
            entry, config=dict(entry["config"], name="vgg_backbone")))
    g, images, x, _, fmt = task(cfg, "vgg_image_classifier")
    pooling = cfg.get("pooling", "avg")
    if pooling not in POOLING:
        raise ConversionError(f"pooling = {pooling!r} (keras-hub: one of "
                              f"{POOLING})")
    hidden = dim(cfg, "pooling_hidden_dim", 4096)
    drop = {"rate": rate(cfg, "dropout")}
    # the head's layers, in order: a Sequential's config lists them
    h = Functional(cfg, "head")
    k = Layers(h, fmt)
    y = h.input("input", (None, None, None))
    if pooling == "flatten":
        y = h.layer("Flatten", "flatten", {"data_format": fmt}, y)
        y = h.layer("Dense", "fc1", {"units": hidden, "activation": "relu"},
                    y)
        y = h.layer("Dropout", "output_dropout", drop, y)
        y = h.layer("Dense", "fc2", {"units": hidden, "activation": "relu"},
                    y)
    else:
        y = k.conv(y, "fc1", hidden, 7, use_bias=True, activation="relu")
        y = h.layer("Dropout", "output_dropout", drop, y)
        y = k.conv(y, "fc2", hidden, 1, 1, "same", use_bias=True,
                   activation="relu")
        y = pooler(h, y, pooling, fmt)
    h.layer("Dense", "predictions", predictions(cfg), y)
    layers = [layer.entry for layer in h.layers.values()
              if layer.entry["class_name"] != "InputLayer"]
    x = g.model({"module": "keras", "class_name": "Sequential",
                 "registered_name": None, "config": {
                     "name": "head", "trainable": True, "dtype": g.dtype,
                     "layers": layers}}, x)
    return g.build(x, images, names=["predictions"])  # not "head"
