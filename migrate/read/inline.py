"""A parsed model tree -> the flat :class:`migrate.graph.Graph`.

Nested models are inlined: calling a nested model calls its layers on the
tensors passed in (its InputLayers disappear), so a nested model called
twice yields every one of its layers called twice.  The k-th call of a layer
(k counted over the whole graph) gets the node id ``name`` for k = 0 and
``name#k`` after that.

Nodes come out in topological order, following config order wherever that
is valid (a shared layer's second call may depend on later layers).

**Call nodes.**  Keras 3 writes ``{"args": [...], "kwargs": {...}}`` with
tensors as ``__keras_tensor__`` dicts; they map one to one onto
:attr:`Node.args`/:attr:`Node.kwargs`.  Keras 2 writes the first call
argument with each tensor as ``[layer, node, tensor, kwargs]``:

* a list of one tensor gives ``args=[ref]``; several give ``args=[[ref,
  ...]]`` (a list first argument, as Keras 3 writes merge layers);
* a bare ``[layer, node, tensor, kwargs]`` (TFOpLambda keeps its input
  structure unwrapped) gives ``args=[ref]``;
* ``["_CONSTANT_VALUE", -1, value, kwargs]`` is the constant ``value``;
* the kwargs of the first tensor become :attr:`Node.kwargs`; inside them a
  ``[layer, node, tensor]`` triple that names a layer of the model is a
  tensor.

``None`` values in kwargs (``mask=None``) are dropped.  Other serialized
values (``__numpy__``, ``__slice__``... dicts) are passed on as written.

**Node index rules** (spec 1.4, checked on the fixtures):

* Keras 2 numbers the calls of a nested model from 1 when the model has a
  hidden construction node (every Functional, and a Sequential that knows
  its input shape), from 0 otherwise.  Each written call is referenced
  somewhere, so the base is read off the data: 1 unless index 0 is used.
* Keras 3 references are 0-based, except ``input_layers`` and
  ``output_layers`` entries that name a nested Functional (not Sequential):
  those are 1-based.
* Otherwise a node index counts the referenced layer's ``inbound_nodes`` as
  written in the same config; that is how shared layers are expressed.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from ..errors import ConversionError
from ..graph import Graph, GraphInput, GraphOutput, Node, TensorRef
from .config import Member, ModelSpec, dtype_of

_CONSTANT = "_CONSTANT_VALUE"
MAX_OUTPUTS = 4096  # outputs of one layer call


@dataclass(frozen=True)
class _Raw:
    """A tensor reference as written: ``[layer, node, tensor]``."""

    layer: str
    node: int
    tensor: int


def build_graph(spec: ModelSpec, label: str, keras_version: str = "",
                source_format: str = "") -> Graph:
    """The flat graph of the model ``spec``; ``label`` names the file in
    errors."""
    builder = _Builder(label)
    outputs = builder.call(spec, None)
    names = _output_names(spec)
    named = spec.entry.get("port_output_names")  # an expander's: "logits"
    if isinstance(named, list) and len(named) == len(names) and all(
            isinstance(n, str) and n.isidentifier() for n in named):
        names = named
    graph = Graph(
        name=spec.name, inputs=builder.inputs,
        outputs=[GraphOutput(n, r) for n, r in zip(names, outputs)],
        nodes=builder.nodes, keras_version=keras_version,
        source_format=source_format,
        class_name=str(spec.entry.get("expanded_from") or ""))
    _share_layers(graph, label)
    _count_outputs(graph, label)
    _check_unique(graph, label)
    return graph


SHARED = "_shared_layer"  # config key: this entry calls another scope's layer


def _share_layers(graph: Graph, label: str) -> None:
    """A call written as a layer entry whose config names, under
    :data:`SHARED`, a layer of another scope (an expanded keras-hub task
    calls its backbone's ``token_embedding`` again, ``reverse=True``)
    becomes another call of that layer: one module, tied weights."""
    layers = {n.layer.name: n.layer for n in graph.nodes}
    calls: dict[str, int] = {}
    renamed: dict[str, str] = {}
    for node in graph.nodes:
        target = node.layer.config.get(SHARED)
        if isinstance(target, str):
            if target not in layers or SHARED in layers[target].config:
                raise ConversionError(f"{label}: layer {node.layer.name!r} "
                                      f"shares unknown layer {target!r}")
            node.layer = layers[target]
        k = calls.get(node.layer.name, 0)
        calls[node.layer.name] = k + 1
        new_id = node.layer.name if k == 0 else f"{node.layer.name}#{k}"
        if new_id != node.id:
            renamed[node.id] = new_id
            node.id = new_id
    if not renamed:
        return

    def fix(value):
        if isinstance(value, TensorRef):
            return TensorRef(renamed.get(value.node, value.node), value.index)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    for node in graph.nodes:
        node.args, node.kwargs = fix(node.args), fix(node.kwargs)
        node.__dict__.pop("_inputs", None)
    graph.outputs = [GraphOutput(o.name, fix(o.ref)) for o in graph.outputs]


class _Builder:
    """Collects the graph's nodes and inputs while models are expanded."""

    def __init__(self, label: str):
        self.label = label
        self.nodes: list[Node] = []
        self.inputs: list[GraphInput] = []
        self.calls: dict[str, int] = {}

    def fail(self, spec: ModelSpec, message: str):
        raise ConversionError(f"{self.label}: model {spec.name!r}: {message}")

    def call(self, spec: ModelSpec, args: list | None) -> list[TensorRef]:
        """Emit the nodes of one call of ``spec`` on ``args`` (``None`` for
        the top-level model) and return its output tensors."""
        if spec.kind == "sequential":
            return self._sequential(spec, args)
        return self._functional(spec, args)

    def _emit(self, member: Member, args, kwargs) -> str:
        layer = member.layer
        k = self.calls.get(layer.name, 0)
        self.calls[layer.name] = k + 1
        node_id = layer.name if k == 0 else f"{layer.name}#{k}"
        self.nodes.append(Node(node_id, layer, args, kwargs))
        return node_id

    # -- Sequential ---------------------------------------------------------
    def _sequential(self, spec, args):
        if args is None:
            self.inputs.append(_sequential_input(spec, self))
            x = self.inputs[-1].ref
        else:
            if len(args) != 1:
                self.fail(spec, f"a Sequential model takes one input, it "
                                f"was called on {len(args)}")
            x = args[0]
        for member in spec.members:
            if member.is_input:
                continue
            if member.model is not None:
                outs = self.call(member.model, [x])
                if len(outs) != 1:
                    self.fail(spec, f"layer {member.name!r} has {len(outs)} "
                                    "outputs inside a Sequential model")
                x = outs[0]
            else:
                x = TensorRef(self._emit(member, [x], {}), 0)
        return [x]

    # -- Functional ---------------------------------------------------------
    def _functional(self, spec: ModelSpec, args):
        scope = _Scope(spec, self)
        self._bind_inputs(scope, args)
        for (i, j) in self._order(scope):
            m = spec.members[i]
            node_args, node_kwargs = (_map(v, scope.resolve)
                                      for v in scope.parsed[i, j])
            if m.model is not None:
                # ``model(x)`` or ``model(inputs=x)`` (Gemma 3's CausalLM)
                given = node_args if any(
                    isinstance(t, TensorRef) for t in _flatten(node_args)) \
                    else node_kwargs.get("inputs", [])
                tensors = [t for t in _flatten(given)
                           if isinstance(t, TensorRef)]
                scope.produced[m.name, j] = self.call(m.model, tensors)
            else:
                scope.produced[m.name, j] = self._emit(m, node_args,
                                                       node_kwargs)
        return [scope.resolve(leaf, output=True) for leaf in scope.outputs]

    def _bind_inputs(self, scope: _Scope, args):
        spec = scope.spec
        if args is not None and len(args) != len(scope.inputs):
            self.fail(spec, f"takes {len(scope.inputs)} input(s), it was "
                            f"called on {len(args)}")
        for k, leaf in enumerate(scope.inputs):
            m = spec.member(leaf.layer)
            if m is None or not m.is_input:
                self.fail(spec, f"input {leaf.layer!r} is not an InputLayer")
            if args is None:
                shape, dtype = _input_spec(m.config)
                if shape is None:
                    self.fail(spec, f"input {m.name!r} has no shape")
                gi = GraphInput(m.name, shape, dtype, TensorRef(m.name, 0),
                                _fixed_batch(m.config))
                self.inputs.append(gi)
                scope.produced[m.name, 0] = [gi.ref]
            else:
                scope.produced[m.name, 0] = [args[k]]

    def _order(self, scope: _Scope):
        """The parsed nodes in topological order, config order first."""
        spec, parsed = scope.spec, scope.parsed
        provides = {(spec.members[i].name, j): (i, j) for (i, j) in parsed}
        needs: dict[tuple, set] = {}
        users: dict[tuple, list] = {}
        for key, (node_args, node_kwargs) in parsed.items():
            deps = set()
            for raw in _raws((node_args, node_kwargs)):
                dep = (raw.layer, raw.node - scope.base.get(raw.layer, 0))
                if dep in scope.produced:
                    continue
                if dep not in provides:
                    self.fail(spec, f"layer {spec.members[key[0]].name!r} "
                                    f"uses {[raw.layer, raw.node]}, which is "
                                    "not a call in this model")
                deps.add(provides[dep])
            needs[key] = deps
            for d in deps:
                users.setdefault(d, []).append(key)
        ready = [k for k, d in needs.items() if not d]
        heapq.heapify(ready)
        order = []
        while ready:
            key = heapq.heappop(ready)
            order.append(key)
            for user in users.get(key, []):
                needs[user].discard(key)
                if not needs[user]:
                    heapq.heappush(ready, user)
        if len(order) != len(parsed):
            stuck = sorted({spec.members[i].name for (i, _), d in
                            needs.items() if d})
            self.fail(spec, f"the layer graph has a cycle through {stuck}")
        return order


class _Scope:
    """One call of a Functional model being expanded: its parsed nodes and
    the tensors produced so far."""

    def __init__(self, spec: ModelSpec, builder: _Builder):
        self.spec, self.builder = spec, builder
        self.members = {m.name: m for m in spec.members}
        self.parsed = {}  # (member index, node index) -> (args, kwargs)
        raws: list[_Raw] = []
        for i, m in enumerate(spec.members):
            nodes = [] if m.is_input else m.entry.get("inbound_nodes") or []
            if not isinstance(nodes, list):
                builder.fail(spec, f"layer {m.name!r}: bad inbound_nodes")
            for j, node in enumerate(nodes):
                self.parsed[i, j] = _parse_node(node, self.members, raws,
                                                spec, builder)
        self.inputs = _leaves(spec.config.get("input_layers"), spec, builder)
        self.outputs = _leaves(spec.config.get("output_layers"), spec,
                               builder)
        self.keras2 = any(isinstance(n, list) for m in spec.members
                          for n in (m.entry.get("inbound_nodes") or []))
        self.base = _node_bases(spec, raws + self.outputs, self.keras2)
        # (layer name, node index) -> node id, or the output tensors of an
        # InputLayer or nested model call
        self.produced: dict[tuple[str, int], object] = {}

    def resolve(self, raw: _Raw, output: bool = False) -> TensorRef:
        """The tensor a written reference names."""
        fail = self.builder.fail
        m = self.members.get(raw.layer)
        if m is None:
            fail(self.spec, f"a node refers to unknown layer {raw.layer!r}")
        j = raw.node - self.base.get(raw.layer, 0)
        if (output and not self.keras2 and m.model is not None
                and m.model.kind == "functional"):
            j = raw.node - 1  # Keras 3 counts a hidden first call here
        got = self.produced.get((raw.layer, j))
        if got is None:
            fail(self.spec, f"reference {[raw.layer, raw.node]} names a "
                            "call that does not exist")
        if isinstance(got, str):
            return TensorRef(got, raw.tensor)
        if not 0 <= raw.tensor < len(got):
            fail(self.spec, f"layer {raw.layer!r} has {len(got)} output(s), "
                            f"output {raw.tensor} is used")
        return got[raw.tensor]


# -- inputs and outputs ------------------------------------------------------
def _input_spec(cfg: dict) -> tuple[tuple, str]:
    """``(shape, dtype)`` of an InputLayer config (already normalised)."""
    shape = cfg.get("batch_shape")
    if shape is None and cfg.get("shape") is not None:
        shape = [None] + list(cfg["shape"])
    if not isinstance(shape, (list, tuple)) or not shape:
        shape = None
    return _shape(shape), dtype_of(cfg.get("dtype"))[0]


def _fixed_batch(cfg: dict) -> int | None:
    """The batch size an InputLayer was built with, if any: the port
    takes any batch, but Keras runs such a model only on that one."""
    shape = cfg.get("batch_shape")
    if isinstance(shape, (list, tuple)) and shape:
        b = shape[0]
        if isinstance(b, int) and not isinstance(b, bool) and b > 0:
            return b
    return None


def _shape(shape) -> tuple | None:
    if shape is None:
        return None
    dims = [d if isinstance(d, int) and not isinstance(d, bool) else None
            for d in shape]
    return tuple([None] + dims[1:])  # a baked-in batch size is not real


def _sequential_input(spec: ModelSpec, builder: _Builder) -> GraphInput:
    """The input of a top-level Sequential model: its InputLayer, or a
    ``batch_shape`` on its first layer, or ``build_input_shape``."""
    first = spec.members[0] if spec.members else None
    batch = None
    if first is not None and first.is_input:
        shape, dtype = _input_spec(first.config)
        name, batch = first.name, _fixed_batch(first.config)
    else:
        shape, dtype, name = None, "float32", "input"
        if first is not None and first.layer is not None:
            shape, dtype = _input_spec(first.config)
            name = f"{first.name}_input"
        if shape is None:
            build = spec.entry.get("build_config") or {}
            shape = _shape(spec.config.get("build_input_shape")
                           or build.get("input_shape"))
        if shape is None and first is not None and first.model is not None:
            inner = first.model
            if inner.kind == "sequential":
                return _sequential_input(inner, builder)
            leaves = _leaves(inner.config.get("input_layers"), inner, builder)
            m = inner.member(leaves[0].layer) if leaves else None
            if m is not None:
                shape, dtype = _input_spec(m.config)
                name = m.name
    if shape is None:
        builder.fail(spec, "the Sequential model was never built, so its "
                           "input shape is unknown")
    return GraphInput(name, shape, dtype, TensorRef(name, 0), batch)


def _output_names(spec: ModelSpec) -> list[str]:
    if spec.kind == "sequential":
        layers = [m for m in spec.members if not m.is_input]
        return [layers[-1].name if layers else spec.members[0].name]
    struct = spec.config.get("output_layers")
    leaves = _leaves(struct, spec, None)
    if isinstance(struct, dict) and all(  # dict outputs: by their keys
            isinstance(k, str) and k.isidentifier() and _is_triple(v)
            for k, v in struct.items()) and len(struct) == len(leaves):
        return sorted(struct)
    return [leaf.layer for leaf in leaves]


def _check_unique(graph: Graph, label: str) -> None:
    """Layer names must identify layers (a nested ``a`` with a layer ``b``
    and a Keras 2 top-level layer named ``a/b`` would not)."""
    seen: dict[str, object] = {}
    for node in graph.nodes:
        if seen.setdefault(node.layer.name, node.layer) is not node.layer:
            raise ConversionError(
                f"{label}: two different layers are both named "
                f"{node.layer.name!r}")
    inputs = {gi.name for gi in graph.inputs}
    if inputs & seen.keys():
        raise ConversionError(f"{label}: input and layer share the name "
                              f"{sorted(inputs & seen.keys())[0]!r}")


def _count_outputs(graph: Graph, label: str) -> None:
    """Set ``num_outputs`` from the highest output index anything uses."""
    used: dict[str, int] = {}
    refs = [r for n in graph.nodes for r in n.inputs]
    refs += [o.ref for o in graph.outputs]
    for r in refs:
        if not 0 <= r.index < MAX_OUTPUTS:
            raise ConversionError(
                f"{label}: a reference uses output {r.index} of "
                f"{r.node!r} (a layer has at most {MAX_OUTPUTS} outputs)")
        used[r.node] = max(used.get(r.node, 0), r.index + 1)
    for n in graph.nodes:
        n.num_outputs = max(1, used.get(n.id, 1))


# -- node parsing -------------------------------------------------------------
def _is_triple(x) -> bool:
    return (isinstance(x, list) and len(x) in (3, 4)
            and isinstance(x[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool)
                    for v in x[1:3]))


def _leaves(struct, spec: ModelSpec, builder) -> list[_Raw]:
    """The ``[layer, node, tensor]`` leaves of ``input_layers`` /
    ``output_layers``: a bare triple, a list, or a dict (sorted keys, as
    Keras flattens it)."""
    if struct is None:
        return []
    if _is_triple(struct):
        return [_Raw(*struct[:3])]
    if isinstance(struct, dict):
        return [leaf for k in sorted(struct)
                for leaf in _leaves(struct[k], spec, builder)]
    if isinstance(struct, list):
        return [leaf for item in struct
                for leaf in _leaves(item, spec, builder)]
    if builder is not None:
        builder.fail(spec, f"cannot read input/output entry {struct!r}")
    return []


def _parse_node(node, members: dict, raws: list, spec, builder):
    """``(args, kwargs)`` of one written call, tensors as :class:`_Raw`."""
    if isinstance(node, dict) and "args" in node:
        try:
            args = _k3_value(node.get("args") or [], raws)
            kwargs = _k3_value(node.get("kwargs") or {}, raws)
        except ValueError as exc:
            builder.fail(spec, str(exc))
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            builder.fail(spec, f"bad call node {str(node)[:80]}")
        return args, _drop_none(kwargs)
    if isinstance(node, list):
        return _parse_k2_node(node, members, raws)
    builder.fail(spec, f"bad call node {str(node)[:80]}")


def _k3_value(value, raws):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            inner = value.get("config")
            history = inner.get("keras_history") \
                if isinstance(inner, dict) else None
            if not _is_triple(history):
                raise ValueError(f"tensor without keras_history: "
                                 f"{str(value)[:80]}")
            raw = _Raw(*history[:3])
            raws.append(raw)
            return raw
        return {k: _k3_value(v, raws) for k, v in value.items()}
    if isinstance(value, list):
        return [_k3_value(v, raws) for v in value]
    return value


def _parse_k2_node(node: list, members: dict, raws: list):
    kwargs: dict = {}

    def first_arg(x):
        if isinstance(x, list) and len(x) in (3, 4) and x[0] == _CONSTANT:
            if len(x) == 4 and isinstance(x[3], dict) and not kwargs:
                kwargs.update(x[3])
            return x[2]
        if _is_triple(x):
            if len(x) == 4 and isinstance(x[3], dict) and not kwargs:
                kwargs.update(x[3])
            raws.append(_Raw(*x[:3]))
            return raws[-1]
        if isinstance(x, list):
            return [first_arg(v) for v in x]
        if isinstance(x, dict):
            return {k: first_arg(v) for k, v in x.items()}
        return x

    def kwarg(x):
        if (isinstance(x, list) and len(x) == 3 and _is_triple(x)
                and x[0] in members):
            raws.append(_Raw(*x))
            return raws[-1]
        if isinstance(x, list):
            return [kwarg(v) for v in x]
        if isinstance(x, dict):
            return {k: kwarg(v) for k, v in x.items()}
        return x

    if _is_triple(node) or (node and node[0] == _CONSTANT):
        args = [first_arg(node)]  # an unwrapped TFOpLambda first argument
    else:
        value = first_arg(node)
        args = [value[0]] if len(value) == 1 else [value]
    return args, _drop_none(kwarg(kwargs))


def _drop_none(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None}


def _node_bases(spec: ModelSpec, raws: list[_Raw], keras2: bool) -> dict:
    """The number each referenced nested model's calls start from (Keras 2
    only; see the module docstring)."""
    if not keras2:
        return {}
    used: dict[str, set] = {}
    for raw in raws:
        used.setdefault(raw.layer, set()).add(raw.node)
    bases = {}
    for m in spec.members:
        if m.model is not None and m.name in used:
            bases[m.name] = 0 if 0 in used[m.name] else 1
    return bases


# -- structure helpers ----------------------------------------------------
def _map(value, fn):
    if isinstance(value, _Raw):
        return fn(value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


def _raws(value):
    if isinstance(value, _Raw):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _raws(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _raws(v)


def _flatten(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif isinstance(value, dict):
        for k in sorted(value):
            yield from _flatten(value[k])
    else:
        yield value
