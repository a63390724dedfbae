"""Graph -> Program: run each node's rule, track layouts, name everything.

The :class:`Program` is everything the emitter needs to print ``model.py``
and everything the writer needs for the weights and the report; it holds no
Keras objects and no weights (only lazy producers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConversionError, UnsupportedLayers
from .graph import Graph, Node, TensorRef
from .layout import Layout, channels_first, convert, identity
from .rules import registry
from .rules.base import HOLE, IN, Call, Emit, Refused, Tensor
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

    # -- public -------------------------------------------------------------
    def run(self) -> Program:
        inputs = self._inputs()
        for node in self.graph.nodes:
            self._node(node)
        if self.problems:
            raise UnsupportedLayers(self.problems)
        outputs, returns = self._outputs()
        self._flush()
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
        return Tensor(t.shape, layout, t.dtype, code)

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
                        want = rule.prefers(node.layer.config, rank)
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
            t = self.tensors[go.ref]
            var = self._var(go.ref)
            layout = t.layout
            want = (identity(len(t.shape)) if self.options.layout == "keras"
                    or layout.flat is not None else layout)
            if want != layout:
                code, kind = convert(var, t.shape, layout, want)
                if kind == "permute":
                    self.permutes.append(f"output {go.name}: -> Keras layout")
                out = self.vars.name(("out", go.name), go.name, "out")
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
                                  "no rule for this layer class"))
            return
        missing = [r for r in node.inputs if r not in self.tensors]
        if missing:  # an upstream layer failed; it is already reported
            return
        inputs = [Tensor(t.shape, t.layout, t.dtype, IN(i), t.masked)
                  for i, t in enumerate(self.tensors[r] for r in node.inputs)]
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
        for out in emit.outputs:
            if out.masked is None:
                out.masked = masked and rule.masks == "propagate"
        self._declare(layer, attr, emit)
        self.layers.setdefault(layer.name, LayerRecord(
            layer.name, layer.class_name, rule.name,
            attr if (emit.module or emit.state) else None))
        self.helpers.update(emit.helpers)
        self._statement(node, call, emit)

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
            self.state[f"{attr}.{key}" if key else attr] = producer

    def _statement(self, node: Node, call: Call, emit: Emit) -> None:
        in_refs = node.inputs
        in_vars = [self._var(r) for r in in_refs]
        # A single-output node whose first input dies here reuses its name.
        first = in_refs[0] if in_refs else None
        reuse = (first is not None and len(emit.outputs) == 1
                 and self.uses.get(first, 0) == 1
                 and in_refs.count(first) == 1)
        outs = []
        for i, out in enumerate(emit.outputs):
            ref = TensorRef(node.id, i)
            if reuse:
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
                   and pending[0] == in_vars[0]
                   and not (emit.module or emit.state))
        if not compose:
            self._flush()
        if emit.multi is not None:
            expr = _fill(emit.multi[0], in_vars)
            for step in emit.multi[1:]:
                expr = _subst(step, HOLE, expr)
            self.body.append(", ".join(v for _, v, _ in outs) + f" = {expr}")
            for ref, var, out in outs:
                self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                           masked=bool(out.masked))
                self.var_of[ref] = var
            return
        for ref, var, out in outs:
            subs = list(in_vars)
            if compose:
                subs[0] = pending[1]
            expr = _fill(out.steps[0], subs)
            carried = pending[2] if compose else None
            if compose and _too_long(var, expr):
                self._flush()
                expr = _fill(out.steps[0], in_vars)
                carried = None
            self.pending = None
            for step in out.steps[1:]:
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


def _fill(step: str, values: list[str]) -> str:
    for i, v in enumerate(values):
        step = _subst(step, IN(i), v)
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
