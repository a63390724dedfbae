"""Graph -> Program: run each node's rule, track layouts, name everything.

The :class:`Program` is everything the emitter needs to print ``model.py``
and everything the writer needs for the weights and the report; it holds no
Keras objects and no weights (only lazy producers).

Keras masks (see :mod:`migrate.rules.base`) are tracked per tensor.  Before
translating, :meth:`Translator._mask_needs` finds the tensors whose mask some
layer reads (a ``masks="consume"`` rule, possibly through ``"propagate"``
layers); only those masks are written into ``forward``, each once, as a
line of its own (``mask = x != 0``) placed before the statement that could
overwrite its source.  A mask the consuming rule did not use after all (an
explicit ``mask=`` argument won, or Keras 3 ignores it) is removed at the
end.  A tensor variable that serves as a mask is never reused for another
value.

Keras 3's MultiHeadAttention erases the masks of its query, value and key
tensors when it runs, so the layers Keras runs after it see those tensors
unmasked.  A rule declares this with an ``erases_masks(node, keras_major)``
attribute on its function (the refs whose masks go); the translator then
works out Keras 3's run order (:func:`keras3_run_order`, as
``keras.src.ops.function.map_graph`` does) and hides the mask from every
consumer that runs later.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConversionError, UnsupportedLayers, no_rule_reason
from .graph import Graph, Node, TensorRef
from .layout import Layout, channels_first, convert, identity
from .rules import registry
from .rules.base import HOLE, IN, MASK, TMP, Call, Emit, Refused, Tensor
from .emit.names import Namespace, class_identifier, comment_text

LINE = 79
INDENT = 8  # forward body


@dataclass
class Options:
    layout: str = "torch"  # "torch" (channels-first interface) or "keras"
    class_name: str | None = None
    rules: dict | None = None  # extra rules: key -> registry.Rule


@dataclass
class PortTensor:
    name: str  # Keras name
    var: str  # Python name in forward()
    keras_shape: tuple
    layout: Layout
    dtype: str
    vocab: int | None = None  # ids below this feed an Embedding

    @property
    def torch_shape(self) -> tuple:
        return self.layout.torch_shape(self.keras_shape)


@dataclass
class ModuleDecl:
    attr: str
    code: str
    keras_name: str
    init_lines: list[str] = field(default_factory=list)


@dataclass
class LayerRecord:
    keras_name: str
    class_name: str
    rule: str
    torch_name: str | None


@dataclass
class Program:
    model_name: str
    class_name: str
    inputs: list[PortTensor]
    outputs: list[PortTensor]
    modules: list[ModuleDecl]
    body: list[str]  # forward statements, unindented, may be long
    returns: list[str]
    state: dict[str, Callable[[], Any]]
    helpers: dict[str, str]
    layers: list[LayerRecord]
    warnings: list[str]
    permutes: list[str]
    layout: str


class Translator:
    def __init__(self, graph: Graph, options: Options):
        self.graph = graph
        self.options = options
        self.attrs = Namespace()
        self.vars = Namespace()
        self.tensors: dict[TensorRef, Tensor] = {}
        self.var_of: dict[TensorRef, str] = {}
        self.modules: dict[str, ModuleDecl] = {}  # layer name -> decl
        self.state: dict[str, Callable] = {}
        self.helpers: dict[str, str] = {}
        self.layers: dict[str, LayerRecord] = {}
        self.warnings: list[str] = []
        self.permutes: list[str] = []
        self.problems: list[tuple[str, str, str]] = []
        self.body: list[str] = []
        # the statement not written yet: (var, expr, shape comment or None)
        self.pending: tuple[str, str, str | None] | None = None
        self.uses = {ref: len(ns) for ref, ns in graph.consumers().items()}
        for out in graph.outputs:
            self.uses[out.ref] = self.uses.get(out.ref, 0) + 1
        # Keras masks: which tensors' masks are read, the variable holding
        # each written mask, variables that must keep their value (masks),
        # and the body lines that define masks (dropped if never used).
        self.mask_needed = self._mask_needs()
        self.mask_hidden = self._erased_masks()
        self.mask_var: dict[TensorRef, str] = {}
        self.pinned: set[str] = set()
        self.bool_vars: set[str] = set()  # masks and other bool tensors

    # -- public -------------------------------------------------------------
    def run(self) -> Program:
        inputs = self._inputs()
        for node in self.graph.nodes:
            self._node(node)
        if self.problems:
            raise UnsupportedLayers(self.problems)
        outputs, returns = self._outputs()
        self._flush()
        self._drop_unused_masks(returns)
        name = self.options.class_name or class_identifier(self.graph.name)
        return Program(
            model_name=self.graph.name, class_name=name, inputs=inputs,
            outputs=outputs, modules=list(self.modules.values()),
            body=self.body, returns=returns, state=self.state,
            helpers=dict(sorted(self.helpers.items())),
            layers=list(self.layers.values()), warnings=self.warnings,
            permutes=self.permutes, layout=self.options.layout)

    # called by rules through Call -------------------------------------------
    def relayout(self, call: Call, t: Tensor, layout: Layout) -> Tensor:
        code, kind = convert(t.expr, t.shape, t.layout, layout)
        if kind == "permute":
            self.permutes.append(
                f"{call.layer.name}: input permuted {t.layout.perm} -> "
                f"{layout.perm}")
        return Tensor(t.shape, layout, t.dtype, code, t.masked, t.mask)

    def warn(self, layer, message: str) -> None:
        self.warnings.append(f"{layer.name} ({layer.class_name}): {message}")

    # -- inputs and outputs -----------------------------------------------
    def _inputs(self) -> list[PortTensor]:
        ports = []
        single = len(self.graph.inputs) == 1
        for gi in self.graph.inputs:
            rank = len(gi.shape)
            inner = self._preferred(gi.ref, rank, gi.dtype)
            outer = inner if self.options.layout == "torch" else identity(rank)
            var = self.vars.name(("in", gi.name), "x" if single else gi.name, "x")
            ports.append(PortTensor(gi.name, var, gi.shape, outer, gi.dtype,
                                    self._vocab(gi.ref)))
            self.var_of[gi.ref] = var
            self.tensors[gi.ref] = Tensor(gi.shape, outer, gi.dtype)
            if inner != outer:
                code, kind = convert(var, gi.shape, outer, inner)
                self._write(var, code)
                self.tensors[gi.ref] = Tensor(gi.shape, inner, gi.dtype)
                if kind == "permute":
                    self.permutes.append(f"input {gi.name}: Keras layout "
                                         f"-> {inner.perm}")
        return ports

    def _vocab(self, ref: TensorRef) -> int | None:
        sizes = [int(n.layer.config["input_dim"])
                 for n in self.graph.consumers().get(ref, [])
                 if n.layer.class_name == "Embedding"
                 and n.layer.config.get("input_dim")]
        return min(sizes) if sizes else None

    def _preferred(self, ref: TensorRef, rank: int, dtype: str) -> Layout:
        """The layout the first layout-minded consumer of ``ref`` wants."""
        if rank < 3 or not dtype.startswith("float"):
            return identity(rank)
        consumers = self.graph.consumers()
        frontier, seen = [ref], set()
        while frontier:
            nxt = []
            for r in frontier:
                for node in consumers.get(r, []):
                    if node.id in seen:
                        continue
                    seen.add(node.id)
                    rule = registry.lookup(node.layer, self.options.rules)
                    if rule is not None and rule.prefers is not None:
                        try:
                            want = rule.prefers(node.layer.config, rank)
                        except Exception:  # malformed config: the rule
                            want = None  # itself reports it in _node
                        if want is not None:
                            return want
                    if len(node.inputs) >= 1:
                        nxt.extend(TensorRef(node.id, i)
                                   for i in range(node.num_outputs))
            frontier = nxt
        return identity(rank)

    def _outputs(self):
        ports, returns = [], []
        for go in self.graph.outputs:
            if go.ref not in self.tensors:
                raise ConversionError(
                    f"model output {go.name!r} is output {go.ref.index} of "
                    f"{go.ref.node!r}, which that layer does not produce")
            t = self.tensors[go.ref]
            var = self._var(go.ref)
            layout = t.layout
            want = (identity(len(t.shape)) if self.options.layout == "keras"
                    or layout.flat is not None else layout)
            if want != layout:
                code, kind = convert(var, t.shape, layout, want)
                if kind == "permute":
                    self.permutes.append(f"output {go.name}: -> Keras layout")
                out = self.vars.name(("out", go.ref), go.name, "out")
                self._flush()
                self.body.append(f"{out} = {code}")
                var = out
            ports.append(PortTensor(go.name, var, t.shape, want, t.dtype))
            returns.append(var)
        return ports, returns

    # -- nodes ----------------------------------------------------------------
    def _node(self, node: Node) -> None:
        layer = node.layer
        rule = registry.lookup(layer, self.options.rules)
        if rule is None:
            self.problems.append((layer.name, layer.class_name,
                                  no_rule_reason(layer.class_name)))
            return
        missing = [r for r in node.inputs if r not in self.tensors]
        if missing:  # an upstream layer failed; it is already reported
            if not self.problems:  # or the config names a missing output
                self.problems.append((layer.name, layer.class_name, (
                    f"uses output {missing[0].index} of {missing[0].node!r}, "
                    "which that layer does not produce")))
            return
        hidden = [(node.id, r) in self.mask_hidden for r in node.inputs]
        # inputs sharing a mask variable share its placeholder, so a rule
        # combining masks can tell they are one
        first: dict[str, int] = {}
        for i, (r, gone) in enumerate(zip(node.inputs, hidden)):
            if r in self.mask_var and not gone:
                first.setdefault(self.mask_var[r], i)
        inputs = [Tensor(t.shape, t.layout, t.dtype, IN(i),
                         t.masked and not gone,
                         MASK(first[self.mask_var[r]])
                         if r in self.mask_var and not gone else None)
                  for i, (r, t, gone) in enumerate(
                      (r, self.tensors[r], gone)
                      for r, gone in zip(node.inputs, hidden))]
        masked = any(t.masked for t in inputs)
        attr = self.modules[layer.name].attr if layer.name in self.modules \
            else self.attrs.name(layer.name, layer.keras_name)
        call = Call(node, inputs, attr, self.graph.keras_major, self)
        try:
            emit = rule.convert(call)
        except Refused as exc:
            self.problems.append((layer.name, layer.class_name, str(exc)))
            return
        except ConversionError as exc:
            self.problems.append((layer.name, layer.class_name, str(exc)))
            return
        except Exception as exc:  # a rule tripped over a malformed config
            self.problems.append((layer.name, layer.class_name, (
                f"rule {rule.name} cannot read this layer's config "
                f"({type(exc).__name__}: {_first_line(exc)})")))
            return
        for out in emit.outputs:
            if out.masked is None and out.mask is None:
                out.masked = masked and rule.masks == "propagate"
        self._declare(layer, attr, emit)
        self.layers.setdefault(layer.name, LayerRecord(
            layer.name, layer.class_name, rule.name,
            attr if (emit.module or emit.state) else None))
        self.helpers.update(emit.helpers)
        try:
            self._statement(node, call, emit)
        except ConversionError:
            raise
        except Exception as exc:  # e.g. a shape that disagrees with its rank
            self.problems.append((layer.name, layer.class_name, (
                f"rule {rule.name} gave outputs that do not fit this "
                f"layer's config ({type(exc).__name__}: "
                f"{_first_line(exc)})")))

    def _declare(self, layer, attr: str, emit: Emit) -> None:
        if not (emit.module or emit.state):
            return
        if layer.name in self.modules:
            if self.modules[layer.name].code != emit.module:
                raise ConversionError(
                    f"shared layer {layer.name!r} needs different modules "
                    f"for its calls ({self.modules[layer.name].code} vs "
                    f"{emit.module}); convert its inputs to one layout")
            return
        if layer.config.get("trainable") is False:
            emit.init_lines.append("self.{attr}.requires_grad_(False)"
                                   "  # Keras: trainable=False")
        self.modules[layer.name] = ModuleDecl(
            attr, emit.module or "", layer.name,
            [line.format(attr=attr) for line in emit.init_lines])
        for key, producer in emit.state.items():
            self.state[f"{attr}.{key}" if key else attr] = _guarded(
                producer, layer)

    def _statement(self, node: Node, call: Call, emit: Emit) -> None:
        in_refs = node.inputs
        in_vars = [self._var(r) for r in in_refs]
        in_masks = [None if (node.id, r) in self.mask_hidden
                    else self.mask_var.get(r) for r in in_refs]
        masks, mask_lines = self._output_masks(node, call, emit, in_vars,
                                               in_masks)
        # A single-output node whose first input dies here reuses its name.
        first = in_refs[0] if in_refs else None
        # (A mask computed from a tensor gets a name of its own.)
        reuse = (first is not None and len(emit.outputs) == 1
                 and self.uses.get(first, 0) == 1
                 and in_refs.count(first) == 1
                 and in_vars[0] not in self.pinned
                 and (emit.outputs[0].dtype == "bool")
                 == (self.tensors[first].dtype == "bool"))
        hints = [h for names, _ in emit.pre for h in names]
        tmps = [self.vars.name(("tmp", node.id, k), hint, "t")
                for k, hint in enumerate(hints)]
        outs = []
        for i, out in enumerate(emit.outputs):
            ref = TensorRef(node.id, i)
            direct = [k for k in range(len(tmps)) if out.steps == [TMP(k)]]
            if direct and emit.multi is None:
                var = tmps[direct[0]]
            elif reuse:
                var = in_vars[0]
            else:
                base = node.layer.keras_name if len(emit.outputs) == 1 \
                    else f"{node.layer.keras_name}_{i}"
                var = self.vars.name(ref, base, "t")
            outs.append((ref, var, out))
        for r in in_refs:
            self.uses[r] = self.uses.get(r, 1) - 1

        # Stateless ops (activations, pooling, padding, ...) fold into the
        # previous statement; a layer with a submodule starts a new one.
        pending = self.pending
        compose = (pending is not None and reuse and len(outs) == 1
                   and pending[0] == in_vars[0] and not emit.pre
                   and not (emit.module or emit.state) and not mask_lines)
        if not compose:
            self._flush()
        for var, expr in mask_lines:
            self.bool_vars.add(var)
            self.body.append(f"{var} = {expr}")
        k = 0
        for names, code in emit.pre:
            targets = ", ".join(tmps[k:k + len(names)])
            k += len(names)
            self.body.append(
                f"{targets} = {_fill(code, in_vars, in_masks, tmps)}")
        for (ref, var, out), mask in zip(outs, masks):
            if mask is not None:
                self.mask_var[ref] = mask
            if out.dtype == "bool":
                self.bool_vars.add(var)
        if emit.multi is not None:
            expr = _fill(emit.multi[0], in_vars, in_masks, tmps)
            for step in emit.multi[1:]:
                expr = _subst(step, HOLE, expr)
            self.body.append(", ".join(v for _, v, _ in outs) + f" = {expr}")
            for ref, var, out in outs:
                self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                           masked=bool(out.masked))
                self.var_of[ref] = var
            return
        for ref, var, out in outs:
            if var in tmps:  # the output is a variable of emit.pre
                self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                           masked=bool(out.masked))
                self.var_of[ref] = var
                continue
            subs = list(in_vars)
            if compose:
                subs[0] = pending[1]
            expr = _fill(out.steps[0], subs, in_masks, tmps)
            carried = pending[2] if compose else None
            if compose and _too_long(var, expr):
                self._flush()
                expr = _fill(out.steps[0], in_vars, in_masks, tmps)
                carried = None
            self.pending = None
            for step in out.steps[1:]:
                step = _fill(step, [], in_masks, tmps)
                nxt = _subst(step, HOLE, expr)
                if _too_long(var, nxt):
                    self.body.append(f"{var} = {expr}")
                    nxt = _subst(step, HOLE, var)
                expr = nxt
            note = carried
            shape = out.layout.torch_shape(out.shape)
            if (in_refs and out.layout.flat is None
                    and self.tensors[in_refs[0]].torch_shape != shape):
                note = _shape_note(shape)
            if len(outs) == 1:
                self.pending = (var, expr, note)
            else:
                self.body.append(f"{var} = {expr}")
            self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                       masked=bool(out.masked))
            self.var_of[ref] = var

    def _var(self, ref: TensorRef) -> str:
        return self.var_of[ref]

    # -- Keras masks ------------------------------------------------------
    def _mask_needs(self) -> set[TensorRef]:
        """Tensors whose Keras mask some layer may read: inputs of a
        ``consume`` rule, and inputs of a ``propagate`` rule whose output
        mask is needed (walked backwards through the graph)."""
        needed: set[TensorRef] = set()
        for node in reversed(self.graph.nodes):
            rule = registry.lookup(node.layer, self.options.rules)
            policy = rule.masks if rule is not None else "drop"
            outs = any(TensorRef(node.id, k) in needed
                       for k in range(node.num_outputs))
            if policy == "consume" or (policy == "propagate" and outs):
                needed.update(node.inputs)
        return needed

    def _erased_masks(self) -> set[tuple[str, TensorRef]]:
        """(node id, input) pairs whose Keras mask an earlier layer erased
        at run time (see the module docstring)."""
        erasers: dict[TensorRef, list[str]] = {}
        for node in self.graph.nodes:
            rule = registry.lookup(node.layer, self.options.rules)
            erases = getattr(rule.convert, "erases_masks", None) \
                if rule is not None else None
            if erases is not None:
                for ref in erases(node, self.graph.keras_major):
                    erasers.setdefault(ref, []).append(node.id)
        if not erasers:
            return set()
        order = keras3_run_order(self.graph)
        hidden = set()
        for node in self.graph.nodes:
            for ref in node.inputs:
                if any(order.get(e, -1) < order.get(node.id, -1)
                       for e in erasers.get(ref, []) if e != node.id):
                    hidden.add((node.id, ref))
        return hidden

    def _output_masks(self, node, call, emit, in_vars, in_masks):
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
            if source is None or ref not in self.mask_needed:
                masks.append(None)
                continue
            masks.append(self._mask_value(source, node, in_vars, in_masks,
                                          lines))
        return masks, lines

    def _mask_value(self, source, node, in_vars, in_masks, lines) -> str:
        for i, var in enumerate(in_masks):
            if source == MASK(i):
                if var is None:
                    raise ConversionError(
                        f"internal error: {node.layer.name}: the mask of "
                        f"input {i} was not written")
                return var
        for j, var in enumerate(in_vars):
            t = self.tensors[node.inputs[j]]
            if source == IN(j) and t.layout.is_identity:
                self.pinned.add(var)  # its value is a mask from now on
                return var
        expr = _fill(source, in_vars, in_masks)
        for j, ref in enumerate(node.inputs):  # masks are in Keras order
            t = self.tensors[ref]
            if IN(j) in source and not t.layout.is_identity:
                code, _ = convert(in_vars[j], t.shape, t.layout,
                                  identity(t.rank))
                expr = _fill(source, [code if i == j else v for i, v in
                                      enumerate(in_vars)], in_masks)
        var = self.vars.name(("mask", node.id, len(lines)), "mask", "mask")
        lines.append((var, expr))
        return var

    def _drop_unused_masks(self, returns: list[str]) -> None:
        """Remove the lines computing a mask (or another bool tensor, such
        as a Keras 3 mask op whose ``mask=`` argument the consuming rule
        did not need) that nothing after them reads."""
        kept: list[str] = []
        for line in reversed(self.body):
            m = re.match(r"(\w+) = ", line)
            if m and m.group(1) in self.bool_vars:
                # the name as a value, not as a keyword (mask=...)
                word = re.compile(rf"(?<![\w.]){m.group(1)}(?!\w|\s*=[^=])")
                if not any(word.search(x) for x in kept + returns):
                    continue
            kept.append(line)
        self.body = kept[::-1]

    def _write(self, var: str, expr: str) -> None:
        self._flush()
        self.body.append(f"{var} = {expr}")

    def _flush(self) -> None:
        """Write the pending statement, with its shape comment if it fits."""
        if self.pending is not None:
            var, expr, note = self.pending
            line = f"{var} = {expr}"
            if note and INDENT + len(line) + len(note) + 2 <= LINE:
                line += f"  {note}"
            self.body.append(line)
            self.pending = None


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


def _fill(step: str, values: list[str], masks=(), tmps=()) -> str:
    for i, v in enumerate(values):
        step = _subst(step, IN(i), v)
    for i, m in enumerate(masks):
        if m is not None:
            step = step.replace(MASK(i), m)
    for k, t in enumerate(tmps):
        step = step.replace(TMP(k), t)
    if "\x03" in step:
        raise ConversionError("internal error: a rule used the mask of an "
                              "input that has none")
    return step


def _subst(template: str, token: str, expr: str) -> str:
    """Put ``expr`` where ``token`` is, parenthesised unless it is atomic
    or stands alone as an argument (``f(x + y)`` but ``(x + y).flatten(1)``).
    """
    if token not in template:
        return template
    if _atomic(expr):
        return template.replace(token, expr)
    parts = template.split(token)
    out = parts[0]
    for i, rest in enumerate(parts[1:]):
        before = out.rstrip()[-1:]
        after = rest.lstrip()[:1]
        bare = before in ("", "(", "[", ",") and after in ("", ")", "]", ",")
        out += (expr if bare else f"({expr})") + rest
    return out


_OPERATORS = set(" +-*/%@<>=!&|^~")


def _atomic(expr: str) -> bool:
    """True when ``expr`` has no operator outside brackets and strings."""
    depth, quote = 0, None
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote and expr[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in _OPERATORS:
            return False
    return True


def _shape_note(shape) -> str:
    dims = ["B"] + ["?" if d is None else str(d) for d in shape[1:]]
    return "# (" + ", ".join(dims) + ")"


def _too_long(var: str, expr: str) -> bool:
    return INDENT + len(var) + 3 + len(expr) > LINE


def translate(graph: Graph, options: Options | None = None) -> Program:
    return Translator(graph, options or Options()).run()


__all__ = ["Options", "Program", "translate", "channels_first",
           "comment_text"]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _guarded(producer: Callable, layer) -> Callable:
    """``producer``, with a stored weight that does not fit the layer's
    config (a transform fails on it) reported as a ConversionError naming
    the layer, when the weight is read."""
    def produce():
        try:
            return producer()
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(
                f"layer {layer.name!r} ({layer.class_name}): a stored weight "
                f"does not fit the layer's config ({type(exc).__name__}: "
                f"{_first_line(exc)})") from None
    return produce
