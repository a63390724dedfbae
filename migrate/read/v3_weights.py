"""Attach weights stored in the Keras 3 layout (spec 1.3).

Used for ``model.weights.h5`` inside a ``.keras`` archive and for
standalone ``.weights.h5`` files.  Variables are stored by position:
``layers/<key>/vars/0``, ``vars/1``, ... where ``<key>`` is not the layer's
name but its class name in snake case, made unique in list order with
``_1``, ``_2``... (``Dense`` -> ``dense``, ``dense_1``; ``PReLU`` ->
``p_re_lu``).  The walk over the config tree:

* op nodes (``keras.src.ops.*``) take no key;
* a Sequential model skips its InputLayer; a Functional one does not;
* a nested model's group is walked the same way (``layers/functional/
  layers/dense/...``);
* every dataset under a layer's group is one :class:`WeightEntry`, keyed by
  its path relative to the layer (``vars/0``, ``cell/vars/1``,
  ``forward_layer/cell/vars/2``), sorted by key with numbers in numeric
  order.

A missing ``layers/<key>`` group is looked up under
``_layer_checkpoint_dependencies/`` (tf-keras 2.13 files, as Keras does);
a layer without a group has no weights.
"""
from __future__ import annotations

import re

import h5py

from ..errors import ConversionError
from ..weights import LayerWeights, WeightEntry
from .config import ModelSpec
from .hdf5 import datasets_under, group, has_group
from .varpaths import scope

_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")


def attach_v3(spec: ModelSpec, root: h5py.Group, label: str,
              keras_major: int = 3) -> None:
    """Give every layer of ``spec`` its weights from ``root`` (each with
    its Keras scope, see :mod:`.varpaths`, which depends on the Keras
    version that wrote the file)."""
    if group(root, "layers", required=False) is None:
        raise ConversionError(f"{label}: no 'layers' group, not a Keras 3 "
                              "weights file")
    _walk(spec, root, keras_major=keras_major)


# Exported names whose Python class (which names the group) differs.
_PYTHON_CLASS = {"GroupQueryAttention": "GroupedQueryAttention"}


def snake_case(class_name: str) -> str:
    """Keras' key for a class: ``"Conv2DTranspose"`` ->
    ``"conv2d_transpose"``, ``"PReLU"`` -> ``"p_re_lu"``."""
    name = re.sub(r"\W+", "", class_name)
    # A capitalised word gets a "_" before it ("Conv2D|Transpose") ...
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    # ... and so does a capital right after a lowercase letter ("Conv|LSTM").
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def _walk(spec: ModelSpec, root: h5py.Group, at: str = "",
          keras_major: int = 3) -> None:
    """Attach the weights of ``spec``'s layers, stored under the group
    ``at`` of ``root`` (paths, not opened groups: opening one per layer
    costs more than reading a small layer's weights)."""
    used: dict[str, int] = {}
    for m in spec.members:
        if m.layer is not None and m.layer.is_op:
            continue
        if m.is_input and spec.kind == "sequential":
            continue
        key = snake_case(_PYTHON_CLASS.get(m.class_name, m.class_name))
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        sub = _child(root, at, key)
        if sub is None:
            continue
        if m.model is not None:
            _walk(m.model, root, sub, keras_major)
        elif m.layer is not None:
            entries = [WeightEntry(path, array)
                       for path, array in datasets_under(root, sub)]
            entries.sort(key=lambda e: _natural(e.key))
            layer = m.layer
            for e in entries:
                parts = e.key.split("/")[:-2]  # drop "vars", "<i>"
                e.array.scope = scope(layer.class_name, layer.config,
                                      layer.keras_name, parts, keras_major)
            m.layer.weights = LayerWeights(entries, m.layer.name)


def _child(root: h5py.Group, at: str, key: str) -> str | None:
    for container in _CONTAINERS:
        path = f"{at}/{container}/{key}" if at else f"{container}/{key}"
        if has_group(root, path):
            return path
    return None


def _natural(key: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in key.split("/"))
