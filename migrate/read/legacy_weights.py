"""Attach weights stored in the legacy HDF5 layout (spec 1.1 and 1.2).

The layout is the ``model_weights/`` group of a full-model ``.h5`` or the
root of a Keras 2 ``save_weights`` file: attribute ``layer_names``, one
group per top-level layer, and in each group an attribute ``weight_names``
whose entries are dataset paths inside that group (``dense/kernel:0``,
Keras 3: ``model/dense/kernel``).

Entries are mapped by name, never by position:

* a layer's own entries get keys relative to the layer: everything after
  the path component that names the layer (``kernel:0``,
  ``lstm_cell/kernel``, ``forward_lstm/lstm_cell/bias``); when no component
  names it (a renamed layer), the whole stored name is the key;
* a nested model's group holds the weights of all its sublayers, trainable
  ones first across sublayers (so a frozen sublayer's weights come last).
  Each entry goes to the sublayer named by the first path component that
  is the name of one of the model's (possibly deeper nested) layers, with
  the rest of the path as its key.

Entries keep file order within each layer.
"""
from __future__ import annotations

import h5py

from ..errors import ConversionError
from ..weights import LayerWeights, WeightEntry, clean_weight_name
from .config import Member, ModelSpec
from .hdf5 import dataset, group, names_attr


def attach_legacy(spec: ModelSpec, root: h5py.Group, label: str) -> None:
    """Give every layer of ``spec`` its weights from ``root``."""
    members = {m.name: m for m in spec.members}
    for name in names_attr(root, "layer_names"):
        grp = group(root, name, required=False)
        stored = names_attr(grp, "weight_names") if grp is not None else []
        if not stored:
            continue
        member = members.get(name)
        if member is None:
            raise ConversionError(
                f"{label}: the weights file has layer {name!r}, which the "
                f"model config does not have; config and weights do not "
                "belong together")
        if member.model is not None:
            _attach_nested(member, grp, stored, label)
        elif member.layer is not None:
            entries = [WeightEntry(_relative(w, name), _named(grp, w))
                       for w in stored]
            member.layer.weights = LayerWeights(entries, member.layer.name)
    extra = group(root, "top_level_model_weights", required=False)
    if extra is not None and names_attr(extra, "weight_names"):
        raise ConversionError(f"{label}: the model owns weights outside its "
                              "layers (top_level_model_weights); only layer "
                              "weights can be converted")


def _named(grp: h5py.Group, weight_name: str):
    """The dataset ``weight_name``, knowing its Keras variable path: the
    stored name is ``variable.name`` (tf.keras) or ``variable.path``
    (Keras 3), ``:0`` dropped."""
    array = dataset(grp, weight_name)
    array.path = clean_weight_name(weight_name)
    return array


def _relative(weight_name: str, layer_name: str) -> str:
    """``"model/dense/kernel"`` -> ``"kernel"`` for layer ``dense``.

    Keras 2 names may contain ``/`` themselves (``"Conv/BatchNorm"``), so
    the name is matched as a run of path components."""
    parts, name = weight_name.split("/"), layer_name.split("/")
    for i in range(len(parts) - len(name)):
        if parts[i:i + len(name)] == name:
            return "/".join(parts[i + len(name):])
    return weight_name


def _attach_nested(member: Member, grp: h5py.Group, stored: list[str],
                   label: str) -> None:
    spec = member.model
    # first name component -> [(name components, leaf, owning model)]
    by_name: dict[str, list[tuple[list, Member, ModelSpec]]] = {}
    for leaf, owner in spec.leaves():
        if leaf.layer is not None:
            parts = leaf.name.split("/")
            by_name.setdefault(parts[0], []).append((parts, leaf, owner))
    found: dict[str, list[WeightEntry]] = {}
    layers = {}
    for w in stored:
        leaf, key = _owner(w, by_name, spec, member.name, label)
        found.setdefault(leaf.layer.name, []).append(
            WeightEntry(key, _named(grp, w)))
        layers[leaf.layer.name] = leaf.layer
    for name, entries in found.items():
        layers[name].weights = LayerWeights(entries, name)


def _owner(weight_name, by_name, spec: ModelSpec, model_name, label):
    """The sublayer a nested model's weight belongs to, and its key."""
    parts = weight_name.split("/")
    for i, part in enumerate(parts[:-1]):
        candidates = [(len(name), leaf, owner)
                      for name, leaf, owner in by_name.get(part, [])
                      if parts[i:i + len(name)] == name
                      and i + len(name) < len(parts)]
        if not candidates:
            continue
        longest = max(c[0] for c in candidates)
        candidates = [c for c in candidates if c[0] == longest]
        if len(candidates) > 1:  # same name in two nested models: use scope
            before = set(parts[:i])
            candidates = [
                c for c in candidates
                if set(c[2].scope[len(spec.scope):].split("/")[:-1])
                <= before]
        if len(candidates) != 1:
            raise ConversionError(
                f"{label}: weight {weight_name!r} of nested model "
                f"{model_name!r} could belong to several layers named "
                f"{part!r}")
        n, leaf, _ = candidates[0]
        return leaf, "/".join(parts[i + n:])
    raise ConversionError(
        f"{label}: weight {weight_name!r} of nested model {model_name!r} "
        "names none of its layers")
