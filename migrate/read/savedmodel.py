"""Read a tf.keras SavedModel directory (``model.save("dir")``, TF 2.0 to
2.15, and tf-keras since) without TensorFlow.

    my_model/
      saved_model.pb        the TF graph: its presence marks the directory;
                            read only when keras_metadata.pb is missing
      keras_metadata.pb     SavedMetadata: the Keras config of the model and
                            of every layer
      variables/variables.index, variables.data-*   the checkpoint

``keras_metadata.pb`` (TF >= 2.5; before, the same metadata sat in the
object graph of ``saved_model.pb``, read then) is a ``SavedMetadata``
protobuf: ``repeated
SavedObject nodes = 1``, each with ``node_id = 2``, ``node_path = 3``
(``"root"``, ``"root.layer_with_weights-0"``, ``"root.layer-3.cell"``),
``identifier = 4`` (``_tf_keras_network``, ``_tf_keras_sequential``,
``_tf_keras_model`` for a subclassed model, ``_tf_keras_layer``...) and
``metadata = 5``, JSON written by tf-keras's ``json_utils.Encoder``
(tuples as ``{"class_name": "__tuple__", "items": [...]}``, shapes as
``{"class_name": "TensorShape", ...}``: decoded here to plain lists, as
the ``.h5`` writer stores them).  The root's metadata holds
``model_config``, the same ``{"class_name", "config"}`` a ``.h5`` holds.

The checkpoint's keys are paths in its object graph, the
``TrackableObjectGraph`` stored as the string tensor
``_CHECKPOINTABLE_OBJECT_GRAPH`` (``nodes = 1``; per node ``children = 1``
of ``(node_id = 1, local_name = 2)``, ``attributes = 2`` of ``(name = 1,
full_name = 2, checkpoint_key = 3)``).  A key is the first path TF found
to a variable, often through a list (``variables/7/.ATTRIBUTES/
VARIABLE_VALUE``), so keys are never parsed for names.  Instead the graph
is walked the way tf-keras builds it:

* a Functional or Sequential model node has a child ``layer-<i>`` for the
  ``i``-th entry of ``model.layers``: the config's ``layers`` list, less a
  Sequential's leading InputLayer;
* every layer node has a child ``variables``, the list of ``layer.weights``
  in order (a wrapper's, an RNN's, MultiHeadAttention's sub-layers
  included); saved with ``save_traces=False`` it has not, and the layer's
  variables are those under its node (``forward_layer/cell/kernel``),
  depth first in the order the layer tracked them;
* a variable node has one attribute ``VARIABLE_VALUE`` whose
  ``checkpoint_key`` names its tensor and whose ``full_name`` is the
  variable's name: the name a ``.h5`` stores (with ``:0``), so a layer
  gets the same weight keys it gets from the model's ``.h5``.

Each layer node found so is checked against the metadata's layer name at
that node.  Refused, in one line and before anything is written: a
directory without ``keras_metadata.pb`` (a plain TensorFlow SavedModel),
a model whose metadata has no layer graph (subclassed), a checkpoint key
the object graph does not explain, a variable whose tensor is missing, a
layer or a variable the graph does not have where tf-keras puts it, any
file that resolves outside the directory, and everything
:mod:`.tensor_bundle` refuses.
"""
from __future__ import annotations

import json
import os

from ..errors import ConversionError
from ..weights import LayerWeights, WeightEntry
from .config import ModelSpec, load_json
from .legacy_weights import _relative
from .protobuf import Message
from .tensor_bundle import TensorBundle, safe_file

METADATA = "keras_metadata.pb"
GRAPH_FILE = "saved_model.pb"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
METADATA_LIMIT = 256 << 20
GRAPH_LIMIT = 1 << 30  # saved_model.pb, read only before TF 2.5
_VALUE = "VARIABLE_VALUE"
_MAX_NODES = 1 << 22


def is_savedmodel(path: str) -> bool:
    """A directory holding ``saved_model.pb``."""
    return os.path.isdir(path) and os.path.isfile(
        os.path.join(path, GRAPH_FILE))


def _root_info(path: str) -> tuple[dict, str, dict, str]:
    """The root object's metadata JSON and kind, the raw metadata at every
    other node path, and the label for messages."""
    meta = os.path.join(path, METADATA)
    if os.path.lexists(meta):
        real = safe_file(meta, path, f"{path}: {METADATA}")
        label = f"{path}: {METADATA}"
        nodes = [(n.text(3), n.text(4), n.bytes(5)) for n in Message.parse(
            _read_limited(real, label, METADATA_LIMIT), label).messages(1)]
    else:  # TF < 2.5: in the object graph of saved_model.pb
        label = f"{path}: {GRAPH_FILE}"
        real = safe_file(os.path.join(path, GRAPH_FILE), path, label)
        nodes = _legacy_metadata(_read_limited(real, label, GRAPH_LIMIT),
                                 label)
        if not nodes:
            raise ConversionError(
                f"{path}: not a Keras model: a TensorFlow SavedModel without "
                f"Keras metadata ({METADATA}), as tf.saved_model.save and "
                "Keras 3's model.export() write; convert the model's .keras "
                "or .h5 file, or re-save it with tf.keras model.save()")
    root, names = None, {}
    for node_path, identifier, raw in nodes:
        if node_path == "root":
            root = (identifier, raw)
        elif node_path.startswith("root."):
            names[node_path] = raw
    if root is None:
        raise ConversionError(f"{label}: no metadata for the root object")
    return _metadata_json(root[1], label), root[0], names, label


def compiled(path: str) -> bool:
    """Whether the SavedModel's Keras metadata has a ``training_config``
    (the model was saved compiled)."""
    return bool(_root_info(path)[0].get("training_config"))


def read_metadata(path: str) -> tuple[dict, str, dict]:
    """The root model's ``{"class_name", "config"}``, its Keras version
    and the metadata's layer name at each node path (``"root.layer-1"``)
    of the SavedModel directory ``path``."""
    info, what, names, label = _root_info(path)
    cls = info.get("class_name")
    entry = info.get("model_config")
    if not isinstance(entry, dict):
        if isinstance(info.get("config"), dict) and isinstance(cls, str):
            entry = {"class_name": cls, "config": info["config"]}
        else:
            what = what or "object"
            raise ConversionError(
                f"{label}: the saved {what} ({_short(cls)}) has no layer "
                "graph in its metadata (a subclassed model?); only "
                "Sequential and Functional models can be read")
    if info.get("is_graph_network") is False and cls not in (
            "Sequential",):
        raise ConversionError(
            f"{label}: the model is a subclassed {_short(cls)} without a "
            "layer graph; only Sequential and Functional models can be "
            "read")
    version = info.get("keras_version")
    layer_names = {p: _layer_name(raw, label) for p, raw in names.items()}
    return entry, str(version) if isinstance(version, str) else "", \
        layer_names


def _read_limited(path: str, label: str, limit: int) -> bytes:
    if os.path.getsize(path) > limit:
        raise ConversionError(f"{label}: over the {limit >> 20} MiB limit")
    with open(path, "rb") as f:
        return f.read()


def _legacy_metadata(data: bytes, label: str) -> list:
    """``(node_path, identifier, metadata)`` of the Keras objects of a
    ``saved_model.pb`` from before TF 2.5, which kept the metadata in its
    object graph: ``SavedModel.meta_graphs = 2`` -> ``MetaGraphDef.
    object_graph_def = 7`` -> ``SavedObjectGraph.nodes = 1``, each a
    ``SavedObject`` (``children = 1``, ``user_object = 4``:
    ``identifier = 1``, ``metadata = 3``); node paths as tf-keras makes
    them (depth first from ``root``, the first path to a node wins)."""
    graphs = Message.parse(data, label).messages(2)
    if not graphs:
        return []
    objects = graphs[0].message(7)
    nodes = objects.messages(1) if objects is not None else []
    if len(nodes) > _MAX_NODES:
        raise ConversionError(f"{label}: {len(nodes)} objects")
    paths, todo = {0: "root"}, [0]
    while todo and nodes:
        current = todo.pop()
        for ref in nodes[current].messages(1):
            child = ref.signed(1)
            if 0 <= child < len(nodes) and child not in paths:
                paths[child] = f"{paths[current]}.{ref.text(2)}"
                todo.append(child)
    out = []
    for i, node in enumerate(nodes):
        user = node.message(4)
        if user is None or not user.text(1).startswith("_tf_keras"):
            continue
        if not user.bytes(3):  # tf.saved_model.save of a Keras model
            return []
        if i in paths:
            out.append((paths[i], user.text(1), user.bytes(3)))
    return out


def _metadata_json(raw: bytes, label: str) -> dict:
    value = load_json(raw, f"{label}: metadata of the root object")
    return plain_json(value)


def _layer_name(raw: bytes, label: str) -> str | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


def plain_json(value):
    """tf-keras's encoded tuples and shapes as the lists ``.h5`` holds
    (recursively; JSON too deep for that is refused here, the config's
    depth limit is checked later)."""
    def convert(v):
        if isinstance(v, dict):
            cls = v.get("class_name")
            if cls in ("__tuple__", "TensorShape") and set(v) == {
                    "class_name", "items"}:
                items = v["items"]
                return [convert(i) for i in items] if isinstance(
                    items, list) else items
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, list):
            return [convert(x) for x in v]
        return v
    try:
        return convert(value)
    except RecursionError:
        raise ConversionError("metadata JSON nested too deeply") from None


def digest_files(path: str) -> list[tuple[str, str]]:
    """``(name, path)`` of the files conversion reads, to hash: the
    metadata, the index and the data shards, those that stay inside the
    directory (others are refused when read)."""
    names = [METADATA, "variables/variables.index"]
    try:
        names += sorted(f"variables/{n}" for n in os.listdir(
            os.path.join(path, "variables"))
            if n.startswith("variables.data-"))
    except OSError:
        pass
    root = os.path.realpath(path)
    out = []
    for name in names:
        full = os.path.join(path, name)
        real = os.path.realpath(full)
        if os.path.commonpath([real, root]) == root and os.path.isfile(real):
            out.append((name, real))
    return out


def open_checkpoint(path: str) -> TensorBundle:
    prefix = os.path.join(path, "variables", "variables")
    return TensorBundle.open(prefix, f"{path}: variables/variables", path)


class ObjectGraph:
    """The checkpoint's TrackableObjectGraph: children and attributes."""

    def __init__(self, data: bytes, label: str):
        self.label = label
        nodes = Message.parse(data, label).messages(1)
        if not nodes:
            raise ConversionError(f"{label}: empty object graph")
        if len(nodes) > _MAX_NODES:
            raise ConversionError(f"{label}: {len(nodes)} objects")
        self.children: list[dict[str, int]] = []
        self.values: list[tuple[str, str] | None] = []  # (key, full name)
        self.keys: set[str] = set()  # every key an attribute names
        for i, node in enumerate(nodes):
            kids = {}
            for ref in node.messages(1):
                child = ref.signed(1)
                if not 0 <= child < len(nodes):
                    raise ConversionError(f"{label}: object {i} refers to "
                                          f"object {child}, which does not "
                                          "exist")
                kids.setdefault(ref.text(2), child)
            self.children.append(kids)
            value = None
            for attr in node.messages(2):
                self.keys.add(attr.text(3))
                if attr.text(1) == _VALUE:
                    value = (attr.text(3), attr.text(2))
            self.values.append(value)

    def child(self, node: int, name: str) -> int | None:
        return self.children[node].get(name)


def attach_savedmodel(spec: ModelSpec, bundle: TensorBundle,
                      layer_names: dict, label: str) -> None:
    """Give every layer of ``spec`` its weights from ``bundle``."""
    if OBJECT_GRAPH_KEY not in bundle.keys():
        raise ConversionError(f"{label}: the checkpoint has no object graph "
                              f"({OBJECT_GRAPH_KEY})")
    graph = ObjectGraph(bundle.string(OBJECT_GRAPH_KEY),
                        f"{label}: object graph")
    present = set(bundle.keys())
    for key in sorted(present - graph.keys - {OBJECT_GRAPH_KEY}):
        raise ConversionError(f"{label}: checkpoint key {key!r} is not "
                              "explained by the object graph")
    _walk(spec, graph, 0, "root", bundle, present, layer_names, label)


def _walk(spec: ModelSpec, graph: ObjectGraph, node: int, at: str,
          bundle: TensorBundle, present: set, layer_names: dict,
          label: str) -> None:
    members = list(spec.members)
    if spec.kind == "sequential" and members and members[0].is_input:
        members = members[1:]  # Sequential.layers leaves it out
    for i, m in enumerate(members):
        path = f"{at}.layer-{i}"
        child = graph.child(node, f"layer-{i}")
        if child is None:
            raise ConversionError(
                f"{label}: the object graph has no layer-{i} under {at!r} "
                f"for layer {m.name!r}; config and checkpoint do not "
                "belong together")
        _check_name(m.name, child, path, graph, layer_names, label)
        if m.model is not None:
            _walk(m.model, graph, child, path, bundle, present,
                  layer_names, label)
        elif m.layer is not None:
            entries = _variables(m.name, child, path, graph, bundle,
                                 present, label)
            if entries:
                m.layer.weights = LayerWeights(entries, m.layer.name)
    extra = graph.child(node, f"layer-{len(members)}")
    if extra is not None:
        raise ConversionError(
            f"{label}: the object graph has more layers under {at!r} than "
            f"the config's {len(members)}; config and checkpoint do not "
            "belong together")


def _check_name(name, node, path, graph, layer_names, label):
    """The metadata names the layer at ``node`` (under any of its paths:
    tf-keras writes the first one, often ``layer_with_weights-<j>``)."""
    known = [layer_names[p] for p in _paths_of(node, graph, path,
                                               layer_names)]
    if known and name not in known:
        raise ConversionError(
            f"{label}: the object graph has layer {known[0]!r} where the "
            f"config has {name!r}; config and checkpoint do not belong "
            "together")


def _paths_of(node, graph, path, layer_names):
    """Metadata paths that lead to ``node``: ``path`` itself, or the same
    parent with another child name."""
    parent, _, _ = path.rpartition(".")
    out = [path] if path in layer_names else []
    parent_node = _node_at(parent, graph)
    if parent_node is not None:
        for name, child in graph.children[parent_node].items():
            p = f"{parent}.{name}"
            if child == node and p in layer_names and p not in out:
                out.append(p)
    return out


def _node_at(path: str, graph: ObjectGraph) -> int | None:
    node = 0
    for part in path.split(".")[1:]:
        node = graph.child(node, part)
        if node is None:
            return None
    return node


def _variables(name, node, path, graph, bundle, present, label):
    """The layer's variables, as weight entries keyed as the ``.h5`` keys
    them: its ``variables`` list (``layer.weights`` in order) when TF wrote
    one, else (``save_traces=False``, plain checkpoints) every variable
    under the layer node, depth first in child order, each once -- the
    order the layer tracked them in."""
    lst = graph.child(node, "variables")
    if lst is not None:
        found = []
        for i in range(len(graph.children[lst])):
            var = graph.child(lst, str(i))
            if var is None or graph.values[var] is None:
                raise ConversionError(
                    f"{label}: variable {i} of layer {name!r} is not a "
                    f"variable in the object graph ({path})")
            found.append(var)
    else:
        found = _under(node, graph)
    entries = []
    for var in found:
        key, full_name = graph.values[var]
        if key not in present:
            raise ConversionError(f"{label}: the checkpoint lacks {key!r} "
                                  f"(variable {full_name!r} of layer "
                                  f"{name!r}; truncated checkpoint?)")
        stored = f"{full_name}:0"  # the variable's name, as .h5 keeps it
        array = bundle.array(key, f"{full_name} ({key})")
        array.path = full_name
        entries.append(WeightEntry(_relative(stored, name), array))
    return entries


def _under(node: int, graph: ObjectGraph) -> list[int]:
    """Variable nodes reachable from ``node``, depth first, each once
    (iterative: no recursion for deep or cyclic graphs)."""
    seen, out = {node}, []
    stack = [iter(graph.children[node].values())]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        if child in seen:
            continue
        seen.add(child)
        if graph.values[child] is not None:
            out.append(child)
        stack.append(iter(graph.children[child].values()))
    return out


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


__all__ = ["attach_savedmodel", "digest_files", "is_savedmodel",
           "open_checkpoint", "read_metadata"]
