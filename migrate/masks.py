"""Keras masks in the translation: which are read, which Keras 3 erases,
the variable holding each, and the lines that compute them.

Keras masks (see :mod:`migrate.rules.base`) are tracked per tensor.  Before
translating, :func:`needed_masks` finds the tensors whose mask some layer
reads (a ``masks="consume"`` rule, possibly through ``"propagate"``
layers); only those masks are written into ``forward``, each once, as a
line of its own (``mask = x != 0``) placed before the statement that could
overwrite its source.  A mask the consuming rule did not use after all (an
explicit ``mask=`` argument won, or Keras 3 ignores it) is removed at the
end (:meth:`Masks.drop_unused`).  A tensor variable that serves as a mask
is never reused for another value (:attr:`Masks.pinned`).

Keras 3's MultiHeadAttention erases the masks of its query, value and key
tensors when it runs, so the layers Keras runs after it see those tensors
unmasked.  A rule declares this with an ``erases_masks(node, keras_major)``
attribute on its function (the refs whose masks go); :func:`erased_masks`
then works out Keras 3's run order (:func:`keras3_run_order`, as
``keras.src.ops.function.map_graph`` does) and hides the mask from every
consumer that runs later.
"""
from __future__ import annotations

import re

from .compose import fill
from .errors import ConversionError
from .graph import Graph, Node, TensorRef
from .layout import convert, identity
from .rules import registry
from .rules.base import IN, MASK


class Masks:
    """The mask side of one translation.  ``tensors`` (ref -> Tensor) and
    ``names`` (the forward namespace) are the translator's own."""

    def __init__(self, graph: Graph, rules, tensors: dict, names):
        self.needed = needed_masks(graph, rules)
        self.hidden = erased_masks(graph, rules)
        self.var: dict[TensorRef, str] = {}  # ref -> variable of its mask
        self.pinned: set[str] = set()  # variables that must keep their value
        self.bool_vars: set[str] = set()  # masks and other bool tensors
        self._combined: dict[str, str] = {}  # "mask & mask_1" -> its var
        self._tensors = tensors
        self._names = names

    def placeholders(self, node: Node) -> list[str | None]:
        """The mask placeholder each input of ``node`` gets (None: no mask
        written, or erased).  Inputs sharing a mask variable share its
        placeholder, so a rule combining masks can tell they are one."""
        first: dict[str, int] = {}
        out = []
        for i, r in enumerate(node.inputs):
            if r in self.var and (node.id, r) not in self.hidden:
                out.append(MASK(first.setdefault(self.var[r], i)))
            else:
                out.append(None)
        return out

    def input_vars(self, node: Node) -> list[str | None]:
        """The mask variable of each input of ``node`` (None: none)."""
        return [None if (node.id, r) in self.hidden else self.var.get(r)
                for r in node.inputs]

    def outputs(self, node, call, emit, in_vars, in_masks):
        """The mask variable of each output (None: no mask, or nobody reads
        it) and the mask lines to write before the node's statement."""
        explicit = node.kwargs.get("mask")
        if isinstance(explicit, TensorRef):
            previous = IN(node.inputs.index(explicit))
        elif call.inputs and call.inputs[0].masked:
            previous = MASK(0)
        else:
            previous = None
        masks, lines = [], []
        for k, out in enumerate(emit.outputs):
            source = out.mask if out.mask is not None else (
                previous if out.masked else None)
            out.masked = source is not None
            ref = TensorRef(node.id, k)
            if source is None or ref not in self.needed:
                masks.append(None)
                continue
            masks.append(self._value(source, node, in_vars, in_masks,
                                     lines))
        return masks, lines

    def _value(self, source, node, in_vars, in_masks, lines) -> str:
        for i, var in enumerate(in_masks):
            if source == MASK(i):
                if var is None:
                    raise ConversionError(
                        f"internal error: {node.layer.name}: the mask of "
                        f"input {i} was not written")
                return var
        for j, var in enumerate(in_vars):
            t = self._tensors[node.inputs[j]]
            if source == IN(j) and t.layout.is_identity:
                self.pinned.add(var)  # its value is a mask from now on
                return var
        expr = fill(source, in_vars, in_masks)
        if not any(IN(j) in source for j in range(len(in_vars))):
            if expr in self._combined:  # made of masks only: computed once
                return self._combined[expr]
        for j, ref in enumerate(node.inputs):  # masks are in Keras order
            t = self._tensors[ref]
            if IN(j) in source and not t.layout.is_identity:
                code, _ = convert(in_vars[j], t.shape, t.layout,
                                  identity(t.rank))
                expr = fill(source, [code if i == j else v for i, v in
                                     enumerate(in_vars)], in_masks)
        var = self._names.name(("mask", node.id, len(lines)), "mask", "mask")
        lines.append((var, expr))
        if not any(IN(j) in source for j in range(len(in_vars))):
            self._combined[expr] = var
        return var

    def drop_unused(self, body: list[str], returns: list[str],
                    dead: set[str] = frozenset()) -> list[str]:
        """``body`` without the lines computing a mask (or another bool
        tensor, such as a Keras 3 mask op whose ``mask=`` argument the
        consuming rule did not need), or a ``dead`` variable (a value no
        model output depends on), that nothing after them reads."""
        kept: list[str] = []
        for line in reversed(body):
            m = re.match(r"(\w+) = ", line)
            if m and (m.group(1) in self.bool_vars or m.group(1) in dead):
                # the name as a value, not as a keyword (mask=...)
                word = re.compile(rf"(?<![\w.]){m.group(1)}(?!\w|\s*=[^=])")
                if not any(word.search(x) for x in kept + returns):
                    continue
            kept.append(line)
        return kept[::-1]


def needed_masks(graph: Graph, rules) -> set[TensorRef]:
    """Tensors whose Keras mask some layer may read: inputs of a
    ``consume`` rule, and inputs of a ``propagate`` rule whose output mask
    is needed (walked backwards through the graph)."""
    needed: set[TensorRef] = set()
    for node in reversed(graph.nodes):
        rule = registry.lookup(node.layer, rules)
        policy = rule.masks if rule is not None else "drop"
        outs = any(TensorRef(node.id, k) in needed
                   for k in range(node.num_outputs))
        if policy == "consume" or (policy == "propagate" and outs):
            needed.update(node.inputs)
    return needed


def erased_masks(graph: Graph, rules) -> set[tuple[str, TensorRef]]:
    """(node id, input) pairs whose Keras mask an earlier layer erased at
    run time (see the module docstring)."""
    erasers: dict[TensorRef, list[str]] = {}
    for node in graph.nodes:
        rule = registry.lookup(node.layer, rules)
        erases = getattr(rule.convert, "erases_masks", None) \
            if rule is not None else None
        if erases is not None:
            for ref in erases(node, graph.keras_major):
                erasers.setdefault(ref, []).append(node.id)
    if not erasers:
        return set()
    order = keras3_run_order(graph)
    hidden = set()
    for node in graph.nodes:
        for ref in node.inputs:
            if any(order.get(e, -1) < order.get(node.id, -1)
                   for e in erasers.get(ref, []) if e != node.id):
                hidden.add((node.id, ref))
    return hidden


def keras3_run_order(graph: Graph) -> dict[str, int]:
    """The position of each node in the order Keras 3 runs a Functional
    model: by decreasing depth (the longest path to an output), nodes of
    one depth in the order ``map_graph`` first gives them a depth (a
    depth-first walk from the outputs, visited backwards).  Nested models
    are inlined here, so inside them this is an approximation."""
    nodes = {n.id: n for n in graph.nodes}

    def parents(node_id):
        node = nodes[node_id]
        refs = []
        _refs(node.args, refs)
        for key in sorted(node.kwargs):
            _refs(node.kwargs[key], refs)
        return [r.node for r in refs if r.node in nodes]

    finished, order = set(), []
    for out in graph.outputs:
        if out.ref.node not in nodes or out.ref.node in finished:
            continue
        stack = [(out.ref.node, iter(parents(out.ref.node)))]
        busy = {out.ref.node}
        while stack:
            node_id, todo = stack[-1]
            for p in todo:
                if p not in finished and p not in busy:
                    busy.add(p)
                    stack.append((p, iter(parents(p))))
                    break
            else:
                stack.pop()
                busy.discard(node_id)
                finished.add(node_id)
                order.append(node_id)
    depths: dict[str, int] = {}
    layer_depth: dict[str, int] = {}
    for node_id in reversed(order):
        depth = max(depths.setdefault(node_id, 0),
                    layer_depth.get(nodes[node_id].layer.name, 0))
        layer_depth[nodes[node_id].layer.name] = depth
        depths[node_id] = depth
        for p in parents(node_id):
            depths[p] = max(depth + 1, depths.get(p, 0))
    ranked = sorted(enumerate(depths), key=lambda x: (-depths[x[1]], x[0]))
    return {node_id: pos for pos, (_, node_id) in enumerate(ranked)}


def _refs(value, out: list) -> None:
    """Tensor refs in ``value`` in Keras's flatten order (dict keys
    sorted)."""
    if isinstance(value, TensorRef):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _refs(v, out)
    elif isinstance(value, dict):
        for k in sorted(value):
            _refs(value[k], out)
