"""Graph -> Program: run each node's rule, track layouts, name everything.

The :class:`Program` is everything the emitter needs to print ``model.py``
and everything the writer needs for the weights and the report; it holds no
Keras objects and no weights (only lazy producers).

Keras masks ride along with the tensors: :mod:`migrate.masks` decides
which are written, and where; this module asks it for each node's input
masks and writes the lines it returns.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConversionError, UnsupportedLayers, no_rule_reason
from .graph import Graph, Node, TensorRef
from .layout import Layout, channels_first, convert, identity
from .rules import registry
from .rules.base import HOLE, IN, TMP, Call, Emit, Refused, Tensor
from .emit.names import (Namespace, class_identifier, comment_text,
                         shape_text)
from .compose import _atomic, fill, subst  # noqa: F401 (_atomic: tests)
from .masks import Masks, keras3_run_order
from .params import layer_params

LINE = 79
INDENT = 8  # forward body


@dataclass
class Options:
    layout: str = "torch"  # "torch" (channels-first interface) or "keras"
    class_name: str | None = None
    rules: dict | None = None  # extra rules: key -> registry.Rule
    flat: bool = False  # True: no block classes (migrate.fold)


@dataclass
class PortTensor:
    name: str  # Keras name
    var: str  # Python name in forward()
    keras_shape: tuple
    layout: Layout
    dtype: str
    vocab: int | None = None  # ids below this feed an Embedding
    batch: int | None = None  # the only batch size Keras accepts
    # "padding": a padding mask (1 = real token); "positions": time steps
    # of the other inputs (a MaskedLMHead's ``mask_positions``)
    role: str | None = None

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
    params: int = 0  # Keras's count (migrate.params)


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
    bool_vars: set[str] = field(default_factory=set)  # masks and bools
    classes: list[str] = field(default_factory=list)  # block classes
    # flat state-dict key -> folded key (migrate.fold)
    renames: dict[str, str] = field(default_factory=dict)


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
        self.output_refs = {out.ref for out in graph.outputs}
        # outputs named other than their layer (dict keys, an expander's
        # "logits"): the variable takes that name
        layer_of = {n.id: n.layer.name for n in graph.nodes}
        self.output_names = {out.ref: out.name for out in graph.outputs
                             if out.name != layer_of.get(out.ref.node)}
        self.input_refs = {gi.ref for gi in graph.inputs}
        self.token_inputs = _token_inputs(graph)  # their embeddings: x
        # a node whose output is its input unchanged (a transpose the
        # layout absorbs, a linear activation) -> the tensor it shares a
        # variable, and so a use count, with
        self.same_as: dict[TensorRef, TensorRef] = {}
        self.masks = Masks(graph, options.rules, self.tensors, self.vars)
        # (tensor, layout) -> the variable holding it permuted, and where
        # the body stood when it was first permuted
        self.relayouts: dict[tuple[TensorRef, Layout], str] = {}
        self.relayout_first: dict[tuple[TensorRef, Layout], int] = {}

    # -- public -------------------------------------------------------------
    def run(self) -> Program:
        inputs = self._inputs()
        for node in self.graph.nodes:
            self._node(node)
        if self.problems:
            raise UnsupportedLayers(self.problems)
        outputs, returns = self._outputs()
        self._flush()
        self.body = self.masks.drop_unused(self.body, returns,
                                           self._dead_vars())
        name = self.options.class_name or (
            self.graph.class_name if self.graph.class_name.isidentifier()
            else class_identifier(self.graph.name))
        return Program(
            model_name=self.graph.name, class_name=name, inputs=inputs,
            outputs=outputs, modules=list(self.modules.values()),
            body=self.body, returns=returns, state=self.state,
            helpers=dict(sorted(self.helpers.items())),
            layers=list(self.layers.values()), warnings=self.warnings,
            permutes=self.permutes, layout=self.options.layout,
            bool_vars=set(self.masks.bool_vars))

    def _dead_vars(self) -> set[str]:
        """Variables of values no output depends on (a nested backbone's
        pooled output under a MaskedLM head): their lines are not
        written; their layers' modules and weights stay."""
        live: set[str] = set()
        frontier = [o.ref.node for o in self.graph.outputs]
        nodes = {n.id: n for n in self.graph.nodes}
        while frontier:
            node = nodes.get(frontier.pop())
            if node is None or node.id in live:
                continue
            live.add(node.id)
            frontier.extend(r.node for r in node.inputs)
        return {var for ref, var in self.var_of.items()
                if ref.node in nodes and ref.node not in live}

    # called by rules through Call -------------------------------------------
    def declared(self) -> dict:
        layers = {n.layer.name: n.layer for n in self.graph.nodes}
        return {name: (layers[name], decl.attr)
                for name, decl in self.modules.items() if name in layers}

    def relayout(self, call: Call, t: Tensor, layout: Layout) -> Tensor:
        """``t`` in ``layout``.  The second layer that needs a stored
        tensor permuted the same way gets the first one's permute, moved
        into a variable of its own (``x_cl = x.permute(0, 2, 1)``)."""
        ref = next((r for i, r in enumerate(call.node.inputs)
                    if t.expr == IN(i)), None)
        key = (ref, layout)
        if ref is not None and key in self.relayouts:
            var = self.relayouts[key]
            return Tensor(t.shape, layout, t.dtype, var, t.masked, t.mask)
        code, kind = convert(t.expr, t.shape, t.layout, layout)
        if kind != "permute":
            return Tensor(t.shape, layout, t.dtype, code, t.masked, t.mask)
        if ref is not None and t.layout == self.tensors[ref].layout:
            source = self.var_of[ref]
            var = self._shared_relayout(key, source, convert(
                source, t.shape, t.layout, layout)[0])
            if var is not None:  # the first request's permute, moved
                return Tensor(t.shape, layout, t.dtype, var, t.masked,
                              t.mask)
        self.permutes.append(f"{call.layer.name}: input permuted "
                             f"{t.layout.perm} -> {layout.perm}")
        return Tensor(t.shape, layout, t.dtype, code, t.masked, t.mask)

    def _shared_relayout(self, key, source: str, written: str):
        """The variable for a permute an earlier statement wrote as
        ``written`` (inserted before that statement), or None when this is
        the first request (remembered) or the text is not found."""
        if key not in self.relayout_first:
            self.relayout_first[key] = len(self.body)
            return None
        start = self.relayout_first[key]
        pattern = re.compile(rf"(?<![\w.]){re.escape(written)}")
        first = next((i for i in range(start, len(self.body))
                      if pattern.search(self.body[i])), None)
        pending = self.pending
        if first is None and not (pending and pattern.search(pending[1])):
            return None
        suffix = "cl" if key[1].is_identity else "perm"
        var = self.vars.name(("relayout",) + key, f"{source}_{suffix}", "t")
        for i in range(first if first is not None else len(self.body),
                       len(self.body)):
            self.body[i] = pattern.sub(var, self.body[i])
        if pending and pattern.search(pending[1]):
            self.pending = (pending[0], pattern.sub(var, pending[1]),
                            pending[2])
        self.body.insert(first if first is not None else len(self.body),
                         f"{var} = {written}")
        self.relayouts[key] = var
        return var

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
                                    self._vocab(gi.ref), gi.batch,
                                    self._role(gi.ref)))
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
                 if n.layer.class_name in ("Embedding", "ReversibleEmbedding")
                 and n.layer.config.get("input_dim")]
        return min(sizes) if sizes else None

    def _role(self, ref: TensorRef) -> str | None:
        """"padding" for an input passed as a padding mask (keras-hub's
        ``padding_mask=`` / ``decoder_padding_mask=`` arguments)."""
        for n in self.graph.consumers().get(ref, []):
            if any(k.endswith("padding_mask") and v == ref
                   for k, v in n.kwargs.items()):
                return "padding"
            if n.layer.class_name.endswith("MaskedLMHead") and \
                    n.args[1:2] == [ref]:
                return "positions"
        return None

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
        marks = self.masks.placeholders(node)
        inputs = []
        for i, (r, mark) in enumerate(zip(node.inputs, marks)):
            t = self.tensors[r]
            gone = (node.id, r) in self.masks.hidden
            inputs.append(Tensor(t.shape, t.layout, t.dtype, IN(i),
                                 t.masked and not gone, mark))
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
            if os.environ.get("KERAS2TORCH_DEBUG"):
                raise  # a rule's author wants the traceback
            self.problems.append((layer.name, layer.class_name, (
                f"rule {rule.name} cannot read this layer's config "
                f"({type(exc).__name__}: {_first_line(exc)}; "
                "KERAS2TORCH_DEBUG=1 shows the traceback)")))
            return
        for out in emit.outputs:
            if out.masked is None and out.mask is None:
                out.masked = masked and rule.masks == "propagate"
        self._declare(layer, attr, emit)
        self.layers.setdefault(layer.name, LayerRecord(
            layer.name, layer.class_name, rule.name,
            attr if (emit.module or emit.state) else None,
            layer_params(layer, self.graph)))
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
        for extra, (code, state) in emit.modules.items():
            key = f"{layer.name}/{extra}"
            if key not in self.modules:
                self.modules[key] = ModuleDecl(extra, code, layer.name, [])
                for k, producer in state.items():
                    self.state[f"{extra}.{k}" if k else extra] = _guarded(
                        producer, layer)
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
        emit.init_lines.extend(_frozen_lines(emit.state))
        self.modules[layer.name] = ModuleDecl(
            attr, emit.module or "", layer.name,
            [line.format(attr=attr) for line in emit.init_lines])
        for key, producer in emit.state.items():
            self.state[f"{attr}.{key}" if key else attr] = _guarded(
                producer, layer)

    def _statement(self, node: Node, call: Call, emit: Emit) -> None:
        in_refs = node.inputs
        in_vars = [self._var(r) for r in in_refs]
        in_masks = self.masks.input_vars(node)
        masks, mask_lines = self.masks.outputs(node, call, emit, in_vars,
                                               in_masks)
        if self._same_value(node, emit, in_vars, masks, mask_lines):
            return
        # A single-output node whose first input dies here reuses its name,
        # unless it computes a model output: that is named after its layer,
        # as the docstring names it.
        first = in_refs[0] if in_refs else None
        keys = [self._key(r) for r in in_refs]
        # Outputs that are an input as it is, or a variable of emit.pre,
        # take that variable; the one output left is named as if alone.
        passed = self._passed_through(node, emit)
        tmp_steps = [[TMP(k)] for k in range(
            sum(len(names) for names, _ in emit.pre))]
        computed = [i for i, out in enumerate(emit.outputs)
                    if i not in passed and (emit.multi is not None
                                            or out.steps not in tmp_steps)]
        single = len(computed) == 1 and (len(emit.outputs) == 1
                                         or emit.multi is None)
        main = emit.outputs[computed[0]] if single else None
        # (A mask computed from a tensor gets a name of its own.)
        last_use = (first is not None and single
                    and self.uses.get(keys[0], 0) == 1
                    and keys.count(keys[0]) == 1
                    and in_vars[0] not in self.masks.pinned
                    and (main.dtype == "bool")
                    == (self.tensors[first].dtype == "bool"))
        reuse = last_use and TensorRef(node.id, computed[0]) \
            not in self.output_refs
        # Ids embedded are no longer ids: the value takes its layer's name,
        # or ``x`` for the token ids (nanoGPT's ``x = self.wte(idx)``).
        embeds = (reuse and first is not None
                  and first in self.input_refs
                  and not self.tensors[first].dtype.startswith(
                      ("float", "bool"))
                  and main.dtype.startswith("float"))
        if embeds:
            reuse = False
        hints = [h for names, _ in emit.pre for h in names]
        tmps = [self.vars.name(("tmp", node.id, k), hint, "t")
                for k, hint in enumerate(hints)]
        outs = []
        for i, out in enumerate(emit.outputs):
            ref = TensorRef(node.id, i)
            if i in passed:
                continue
            direct = [k for k in range(len(tmps)) if out.steps == [TMP(k)]]
            if direct and emit.multi is None:
                var = tmps[direct[0]]
            elif reuse and i == computed[0]:
                var = in_vars[0]
            elif embeds and first in self.token_inputs and \
                    self.vars.free(self.token_inputs[first]) and \
                    ref not in self.output_refs:
                var = self.vars.name(ref, self.token_inputs.pop(first), "t")
            else:
                base = node.layer.keras_name if single \
                    else f"{node.layer.keras_name}_{i}"
                base = _role_name(node, out, self.tensors) or base
                var = self.vars.name(ref, self.output_names.get(ref, base),
                                     "t")
            outs.append((ref, var, out))
        for key in keys:
            self.uses[key] = self.uses.get(key, 1) - 1
        for i, j in passed.items():
            ref, out, key = TensorRef(node.id, i), emit.outputs[i], keys[j]
            self.uses[key] = self.uses.get(key, 0) + self.uses.pop(ref, 0)
            self.same_as[ref] = key
            self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                       masked=bool(out.masked))
            self.var_of[ref] = in_vars[j]

        # Stateless ops (activations, pooling, padding, ...) fold into the
        # previous statement; a layer with a submodule starts a new one.
        pending = self.pending
        compose = (pending is not None and last_use and len(outs) == 1
                   and pending[0] == in_vars[0] and not emit.pre
                   and not (emit.module or emit.state) and not mask_lines)
        if not compose:
            self._flush()
        for var, expr in mask_lines:
            self.masks.bool_vars.add(var)
            self.body.append(f"{var} = {expr}")
        k = 0
        for names, code in emit.pre:
            targets = ", ".join(tmps[k:k + len(names)])
            k += len(names)
            self.body.append(
                f"{targets} = {fill(code, in_vars, in_masks, tmps)}")
        for (ref, var, out) in outs:  # (bool ones are dropped when unused)
            mask = masks[ref.index]
            if mask is not None:
                self.masks.var[ref] = mask
            if out.dtype == "bool" or out.python or out.shared:
                self.masks.bool_vars.add(var)
        if emit.multi is not None:
            expr = fill(emit.multi[0], in_vars, in_masks, tmps)
            for step in emit.multi[1:]:
                expr = subst(step, HOLE, expr)
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
            expr = fill(out.steps[0], subs, in_masks, tmps)
            carried = pending[2] if compose else None
            if compose and _too_long(var, expr):
                self._flush()
                expr = fill(out.steps[0], in_vars, in_masks, tmps)
                carried = None
            self.pending = None
            for step in out.steps[1:]:
                step = fill(step, [], in_masks, tmps)
                nxt = subst(step, HOLE, expr)
                if _too_long(var, nxt):
                    self.body.append(f"{var} = {expr}")
                    nxt = subst(step, HOLE, var)
                expr = nxt
            note = carried
            shape = out.layout.torch_shape(out.shape)
            if (in_refs and out.layout.flat is None and not out.python
                    and self.tensors[in_refs[0]].torch_shape != shape):
                note = _shape_note(shape)
            if len(outs) == 1:
                self.pending = (var, expr, note)
            else:
                self.body.append(f"{var} = {expr}")
            self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                       masked=bool(out.masked))
            self.var_of[ref] = var

    def _passed_through(self, node: Node, emit: Emit) -> dict[int, int]:
        """Outputs of a node with several that are one of its inputs as
        it is (a T5 layer hands its position bias on): output -> input."""
        if len(emit.outputs) < 2 or emit.multi is not None:
            return {}
        steps = [IN(j) for j in range(len(node.inputs))]
        out = {}
        for i, o in enumerate(emit.outputs):
            if len(o.steps) == 1 and o.steps[0] in steps:
                j = steps.index(o.steps[0])
                if TensorRef(node.id, i) not in self.output_refs and \
                        self.tensors[node.inputs[j]].dtype == o.dtype:
                    out[i] = j
        return out

    def _same_value(self, node: Node, emit: Emit, in_vars, masks,
                    mask_lines) -> bool:
        """Give the output of a node that returns one of its inputs as it
        is the input's variable (no ``transpose = x`` line), unless it is
        a model output (named after its layer) or brings a new mask."""
        if (len(emit.outputs) != 1 or emit.pre or emit.multi is not None
                or emit.module or emit.state or mask_lines
                or masks[0] is not None):
            return False
        out, ref = emit.outputs[0], TensorRef(node.id, 0)
        steps = [IN(i) for i in range(len(node.inputs))]
        if (ref in self.output_refs or len(out.steps) != 1
                or out.steps[0] not in steps):
            return False
        i = steps.index(out.steps[0])
        src = node.inputs[i]
        if self.tensors[src].dtype != out.dtype:
            return False
        key = self._key(src)
        for r in node.inputs:
            self.uses[self._key(r)] = self.uses.get(self._key(r), 1) - 1
        # the variable now lives until the last use of either tensor
        self.uses[key] = self.uses.get(key, 0) + self.uses.pop(ref, 0)
        self.same_as[ref] = key
        self.tensors[ref] = Tensor(out.shape, out.layout, out.dtype,
                                   masked=bool(out.masked))
        self.var_of[ref] = in_vars[i]
        return True

    def _key(self, ref: TensorRef) -> TensorRef:
        """The tensor whose use count ``ref``'s variable goes by."""
        return self.same_as.get(ref, ref)

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


def _shape_note(shape) -> str:
    return "# " + shape_text(shape)


def _too_long(var: str, expr: str) -> bool:
    return INDENT + len(var) + 3 + len(expr) > LINE


_subst = subst  # the older name


def translate(graph: Graph, options: Options | None = None) -> Program:
    from .padfold import fold_padding
    options = options or Options()
    program = fold_padding(Translator(graph, options).run())
    if options.flat:
        return program
    from .fold import fold
    return fold(program, program.bool_vars)


__all__ = ["Options", "Program", "translate", "channels_first",
           "comment_text", "keras3_run_order"]


_TOKEN_NAMES = ("token_ids", "input_ids", "tokens", "ids", "idx")


def _token_inputs(graph: Graph) -> dict[TensorRef, str]:
    """The inputs holding token ids -> what their embedding is called:
    ``x`` for the integer input keras-hub (or Hugging Face, or nanoGPT)
    names so, else for the only integer input that is not a padding mask;
    an encoder-decoder's are ``encoder_hidden`` and ``x`` (the decoder's,
    which the head reads)."""
    ints = [gi for gi in graph.inputs if not gi.dtype.startswith(
        ("float", "bool")) and not gi.name.endswith("padding_mask")]
    by_name = {gi.name: gi.ref for gi in ints}
    if {"encoder_token_ids", "decoder_token_ids"} <= set(by_name):
        return {by_name["encoder_token_ids"]: "encoder_hidden",
                by_name["decoder_token_ids"]: "x"}
    named = [gi for gi in ints if gi.name in _TOKEN_NAMES]
    if named:
        return {named[0].ref: "x"}
    return {ints[0].ref: "x"} if len(ints) == 1 else {}


def _role_name(node: Node, out, tensors) -> str | None:
    """A name for what an op computes where its Keras name is only the
    op's (``get_item``): ``x[:, 0]`` of a (B, T, C) sequence is the first
    position's vector, BERT's ``cls_token``."""
    layer = node.layer
    if not re.fullmatch(r"get_item(_\d+)?", layer.keras_name) or \
            len(node.inputs) != 1 or node.inputs[0] not in tensors:
        return None
    src = tensors[node.inputs[0]]
    if (len(src.shape) == 3 and out.steps == [IN(0) + "[:, 0]"]
            and len(out.shape) == 2 and src.layout.perm == (0, 1, 2)):
        return "cls_token"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _frozen_lines(state: dict) -> list[str]:
    """``requires_grad_(False)`` for the parameters Keras does not have
    (``Transformed(..., frozen=True)``: torch's second LSTM bias), so that
    training moves only what Keras trains."""
    lines = []
    for key, producer in state.items():
        if getattr(producer, "frozen", False):
            ref = ("self.{attr}." + key if all(
                p.isidentifier() for p in key.split(".")) else
                f'self.{{attr}}.get_parameter("{key}")')
            lines.append(f"{ref}.requires_grad_(False)  # "
                         f"{producer.description}")
    return lines


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
    # the way back to Keras (migrate.weightmap) travels with the entry
    produce.producer = producer
    produce.keras_layer = layer.name
    return produce
