"""Write the Functional config a keras-hub model builds in its ``__init__``.

An expander (see :mod:`migrate.read.expand`) describes the graph with this
small builder, in the words of keras-hub's own source::

    g = Functional(cfg)
    token_ids = g.input("token_ids", (None,), "int32")
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": 100, "output_dim": 16}, token_ids)
    ...
    return g.build(outputs=x)

and gets the entry Keras writes for the same graph (``keras.Model(b.input,
b.output).get_config()``): the layer list in Keras's order (by depth from
the outputs, ties in traversal order, as ``keras.src.ops.function`` orders
a Functional's operations), which is also the order the weights file names
the layers in (``layers/transformer_decoder``, ``transformer_decoder_1``...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConversionError

KERAS = "keras.layers"
HUB_LAYERS = "keras_hub.src.layers.modeling"
OPS = "keras.src.ops.numpy"


@dataclass(frozen=True)
class Ref:
    """Output ``index`` of call ``node`` of layer ``layer``."""

    layer: str
    node: int = 0
    index: int = 0


@dataclass
class _Layer:
    name: str
    entry: dict
    calls: list = field(default_factory=list)  # [(args, kwargs)]


class Functional:
    def __init__(self, cfg: dict, name: str | None = None):
        self.cfg = cfg
        self.name = name or str(cfg.get("name") or "functional")
        self.dtype = cfg.get("dtype")
        self.layers: dict[str, _Layer] = {}

    # -- the graph ------------------------------------------------------------
    def input(self, name: str, shape: tuple, dtype: str = "float32") -> Ref:
        self._new(name, {
            "module": KERAS, "class_name": "InputLayer", "registered_name":
            None, "config": {"batch_shape": [None, *shape], "dtype": dtype,
                             "name": name}})
        return Ref(name)

    def layer(self, class_name: str, name: str, config: dict, *args,
              module: str = KERAS, registered: str | None = None,
              **kwargs) -> Ref:
        """Create layer ``name`` and call it on ``args``/``kwargs``."""
        config = {"name": name, "trainable": True, "dtype": self.dtype,
                  **config}
        self._new(name, {"module": module, "class_name": class_name,
                         "registered_name": registered, "config": config})
        return self.call(name, *args, **kwargs)

    def hub(self, class_name: str, name: str, config: dict, *args,
            module: str = HUB_LAYERS, **kwargs) -> Ref:
        """A keras-hub layer (registered as ``keras_hub>Name``)."""
        return self.layer(class_name, name, config, *args, module=module,
                          registered=f"keras_hub>{class_name}", **kwargs)

    def op(self, class_name: str, *args, module: str = OPS,
           options: dict | None = None, **kwargs) -> Ref:
        """A Keras 3 op node (``x[:, 0, :]`` is ``GetItem``); ``options``,
        the op's own config (``ops.mean``'s ``axis`` and ``keepdims``)."""
        base = "".join("_" + c.lower() if c.isupper() else c
                       for c in class_name).lstrip("_")
        name, k = base, 0
        while name in self.layers:
            k += 1
            name = f"{base}_{k}"
        self._new(name, {"module": module, "class_name": class_name,
                         "registered_name": class_name,
                         "config": dict(options or {}, name=name)})
        return self.call(name, *args, **kwargs)

    def model(self, entry: dict, *args, **kwargs) -> Ref:
        """Call a nested model (its own expandable entry) on ``args``."""
        name = entry["config"]["name"]
        self._new(name, dict(entry))
        return self.call(name, *args, **kwargs)

    def call(self, name: str, *args, **kwargs) -> Ref:
        """Call existing layer ``name`` again (a shared layer)."""
        layer = self.layers[name]
        layer.calls.append((list(args), dict(kwargs)))
        return Ref(name, len(layer.calls) - 1)

    def outputs(self, ref: Ref, n: int) -> list[Ref]:
        """The ``n`` outputs of a call that returns several."""
        return [Ref(ref.layer, ref.node, i) for i in range(n)]

    def _new(self, name: str, entry: dict) -> None:
        if name in self.layers:
            raise ConversionError(f"two layers named {name!r}")
        self.layers[name] = _Layer(name, entry)

    # -- the config ----------------------------------------------------------
    def build(self, outputs, inputs=None, names=None) -> dict:
        """The Functional entry; ``inputs`` as keras-hub passes them (a dict
        of input name -> Ref; by default every input, in creation order);
        ``names``, what the port calls its outputs where the layer's name
        would mislead (a tied embedding's reverse call gives ``logits``)."""
        if inputs is None:
            inputs = {n: Ref(n) for n, layer in self.layers.items()
                      if layer.entry["class_name"] == "InputLayer"}
        entries = []
        for name in self._order(outputs):
            layer = self.layers[name]
            entry = dict(layer.entry, name=name)
            if entry["class_name"] == "InputLayer":
                entry["inbound_nodes"] = []
            else:
                entry["inbound_nodes"] = [
                    {"args": _tensors(a), "kwargs": _tensors(k)}
                    for a, k in layer.calls]
            entries.append(entry)
        return {"module": "keras.src.models.functional",
                "class_name": "Functional", "registered_name": "Functional",
                "config": {"name": self.name, "trainable": True,
                           "layers": entries,
                           "input_layers": _triples(inputs),
                           "output_layers": _triples(outputs)},
                **({"port_output_names": list(names)} if names else {})}

    def _order(self, outputs) -> list[str]:
        """Keras's order of a Functional's operations: nodes visited depth
        first from the outputs (inputs in flattened order, dict keys
        sorted); a layer's depth is one more than its deepest consumer's;
        deeper layers first, ties in order of first visit."""
        index: dict[str, int] = {}
        finished: list[Ref] = []
        done: set = set()

        def visit(ref: Ref) -> None:
            key = (ref.layer, ref.node)
            if key in done:
                return
            index.setdefault(ref.layer, len(index))
            layer = self.layers[ref.layer]
            if layer.calls:
                args, kwargs = layer.calls[ref.node]
                for dep in _flat((args, kwargs)):
                    visit(dep)
            done.add(key)
            finished.append(key)

        for ref in _flat(outputs):
            visit(ref)
        node_depth: dict = {}
        layer_depth: dict[str, int] = {}
        for key in reversed(finished):
            depth = max(node_depth.setdefault(key, 0),
                        layer_depth.get(key[0], 0))
            layer_depth[key[0]] = depth
            node_depth[key] = depth
            layer = self.layers[key[0]]
            if layer.calls:
                args, kwargs = layer.calls[key[1]]
                for dep in _flat((args, kwargs)):
                    k = (dep.layer, dep.node)
                    node_depth[k] = max(depth + 1, node_depth.get(k, 0))
        missing = [n for n in self.layers if n not in layer_depth]
        if missing:
            raise ConversionError(f"layers {missing} are not used")
        return sorted(layer_depth, key=lambda n: (-layer_depth[n], index[n]))


def _flat(value):
    """Refs in Keras's flattening order (dict keys sorted)."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for k in sorted(value):
            yield from _flat(value[k])


SLICE = {"class_name": "__slice__",
         "config": {"start": None, "stop": None, "step": None}}  # ``:``


def _tensors(value):
    if isinstance(value, Ref):
        return {"class_name": "__keras_tensor__", "config": {
            "keras_history": [value.layer, value.node, value.index]}}
    if isinstance(value, (list, tuple)):
        return [_tensors(v) for v in value]
    if isinstance(value, dict):
        return {k: _tensors(v) for k, v in value.items()}
    return value


def _triples(value):
    if isinstance(value, Ref):
        return [value.layer, value.node, value.index]
    if isinstance(value, (list, tuple)):
        return [_triples(v) for v in value]
    if isinstance(value, dict):
        return {k: _triples(v) for k, v in value.items()}
    raise ConversionError(f"not a tensor: {value!r}")
