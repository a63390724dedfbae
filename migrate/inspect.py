"""What each Keras layer becomes, without writing anything.

    table = migrate.inspect.inspect_model("model.keras")
    for row in table.rows:
        row.keras_name, row.class_name, row.output_shapes, row.rule, row.code

The table comes from a *traced* translation: the model's graph with every
layer call's output marked as a model output.  A tensor that is an output is
never folded into the next statement, so each layer call gets statements of
its own, and the traced module returns every intermediate value in a known
layout.  The same rules run as in :func:`migrate.convert`, so the code shown
is what the port does (``model.py`` may join a stateless layer onto the line
before it).  :mod:`migrate.verify` runs the traced module for per-layer
parity.

A model with unsupported layers still gets its whole table: those layers are
``unsupported`` with the reason, and layers fed by them are ``blocked``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

from .errors import ConversionError, UnsupportedLayers
from .graph import Graph, GraphOutput, TensorRef
from .params import layer_params, model_params
from .translate import Options, Program, Translator

__all__ = ["Inspection", "LayerRow", "Trace", "describe_rules",
           "inspect_model", "keras_label", "rules_markdown", "trace"]


@dataclass
class Trace:
    """A traced translation of a graph.

    ``taps[k]`` names output ``k`` of the traced program: ``(node_id,
    output_index)``, or ``(input_name, -1)`` for a model input.
    ``program`` is None when some layer could not be converted
    (``problems`` lists them).
    """

    graph: Graph
    translator: Translator
    program: Program | None
    taps: list[tuple[str, int]]
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def lines_by_node(self) -> dict[str, list[str]]:
        """Forward statements per node id, in order."""
        t = self.translator
        owner: dict[str, str] = {}
        for node in self.graph.nodes:
            for i in range(node.num_outputs):
                var = t.var_of.get(TensorRef(node.id, i))
                if var is not None:
                    owner.setdefault(var, node.id)
        body = list(t.body)
        if self.program is None and t.pending is not None:
            body.append(f"{t.pending[0]} = {t.pending[1]}")
        out: dict[str, list[str]] = {}
        for line in body:
            lhs, sep, _ = line.partition(" = ")
            names = [v.strip() for v in lhs.split(",")] if sep else []
            node = next((owner[v] for v in names if v in owner), None)
            if node is not None:
                out.setdefault(node, []).append(line)
        return out


def trace(graph: Graph, options: Options | None = None) -> Trace:
    """Translate ``graph`` with every layer output (and every input) marked
    as an output of the model."""
    taps: list[tuple[str, int]] = []
    outputs: list[GraphOutput] = []
    for gi in graph.inputs:
        outputs.append(GraphOutput(gi.name, gi.ref))
        taps.append((gi.name, -1))
    for node in graph.nodes:
        for i in range(node.num_outputs):
            outputs.append(GraphOutput(node.id if node.num_outputs == 1
                                       else f"{node.id}_{i}",
                                       TensorRef(node.id, i)))
            taps.append((node.id, i))
    traced = dataclasses.replace(graph, outputs=outputs)
    translator = Translator(traced, options or Options())
    try:
        program = translator.run()
        problems: list = []
    except UnsupportedLayers as exc:
        program, problems = None, list(exc.problems)
    return Trace(traced, translator, program, taps, problems)


@dataclass
class LayerRow:
    """One layer call of the model, as ``inspect`` shows it."""

    node: str  # node id: "conv1", "shared#1" (second call), "inner/d1"
    keras_name: str  # the layer's name in the graph ("inner/d1" if nested)
    class_name: str
    output_shapes: list  # Keras shapes, batch first (None = any size)
    params: int  # stored values of the layer (Keras's count)
    rule: str | None  # the rule function, None when no rule covers the class
    status: str  # "ok", "unsupported" or "blocked"
    reason: str = ""  # why unsupported / blocked
    torch_name: str | None = None  # the submodule attribute, self.<name>
    module: str | None = None  # its constructor code
    code: list[str] = field(default_factory=list)  # forward statements

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Inspection:
    path: str
    model_name: str
    format: str
    keras_version: str
    inputs: list[dict]
    outputs: list[dict]
    rows: list[LayerRow]
    problems: list[tuple[str, str, str]]
    warnings: list[str]
    params: int = 0  # Keras's count for the model (each layer once)

    @property
    def supported(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"path": self.path, "model_name": self.model_name,
                "format": self.format, "keras_version": self.keras_version,
                "supported": self.supported, "params": self.params,
                "inputs": self.inputs,
                "outputs": self.outputs,
                "layers": [r.to_dict() for r in self.rows],
                "unsupported": [{"layer": n, "class_name": c, "reason": r}
                                for n, c, r in self.problems],
                "warnings": list(self.warnings)}


def inspect_model(path, weights=None, *, layout: str = "torch",
                  rules: dict | None = None,
                  plugins: bool = True) -> Inspection:
    """The layer table of the model at ``path`` (nothing is written and no
    weight is read); ``rules`` and ``plugins`` as for
    :func:`migrate.convert`."""
    from . import read as _read
    from .plugins import with_plugins
    rules = with_plugins(rules, plugins)
    if layout not in ("torch", "keras"):
        raise ConversionError(f"layout must be 'torch' or 'keras', not "
                              f"{layout!r}")
    with _read.open_model(os.fspath(path), None if weights is None
                          else os.fspath(weights)) as src:
        tr = trace(src.graph, Options(layout, None, rules))
        graph = src.graph
        fmt, version = src.format, src.keras_version
    return _table(os.fspath(path), graph, tr, fmt, version)


def _table(path, graph: Graph, tr: Trace, fmt, version) -> Inspection:
    t = tr.translator
    problems = {name: (cls, why) for name, cls, why in tr.problems}
    lines = tr.lines_by_node()
    rows = []
    from .rules import registry
    for node in graph.nodes:
        layer = node.layer
        rule = registry.lookup(layer, t.options.rules)
        shapes = []
        for i in range(node.num_outputs):
            tensor = t.tensors.get(TensorRef(node.id, i))
            shapes.append(list(tensor.shape) if tensor is not None else None)
        if layer.name in problems:
            status, reason = "unsupported", problems[layer.name][1]
        elif any(r not in t.tensors for r in node.inputs):
            status, reason = "blocked", "an input comes from a layer that " \
                                        "cannot be converted"
        else:
            status, reason = "ok", ""
        decl = t.modules.get(layer.name)
        rows.append(LayerRow(
            node=node.id, keras_name=layer.name,
            class_name=layer.class_name, output_shapes=shapes,
            params=layer_params(layer, graph),
            rule=rule.name if rule is not None else None,
            status=status, reason=reason,
            torch_name=decl.attr if decl is not None else None,
            module=(decl.code or None) if decl is not None else None,
            code=lines.get(node.id, [])))
    return Inspection(
        path=path, model_name=graph.name, format=fmt, keras_version=version,
        inputs=[{"name": gi.name, "keras_shape": list(gi.shape),
                 "dtype": gi.dtype} for gi in graph.inputs],
        outputs=[{"name": go.name, "node": go.ref.node}
                 for go in graph.outputs],
        rows=rows, problems=list(tr.problems), warnings=list(t.warnings),
        params=model_params(graph.layers()))


# -- the rule table, for people ---------------------------------------------
# What each built-in rule writes, by rule function.  A rule not listed here
# is described by its docstring's first line when that names torch code.
TORCH = {
    "dense": "`nn.Linear` on the last axis (any rank); after a Flatten of "
             "a conv map, kernel rows permuted",
    "embedding": "`nn.Embedding`",
    "conv1d": "`nn.Conv1d`; valid, same (uneven TF padding as `F.pad`), "
              "causal, strides, dilation, groups",
    "conv2d": "`nn.Conv2d`; valid, same (uneven TF padding as `F.pad`), "
              "strides, dilation, groups",
    "conv3d": "`nn.Conv3d`",
    "conv1d_transpose": "`nn.ConvTranspose1d`",
    "conv2d_transpose": "`nn.ConvTranspose2d`",
    "conv3d_transpose": "`nn.ConvTranspose3d`",
    "depthwise_conv1d": "`nn.Conv1d(groups=in_channels)`",
    "depthwise_conv2d": "`nn.Conv2d(groups=in_channels)`",
    "separable_conv1d": "`nn.Sequential` of a depthwise and a pointwise "
                        "`nn.Conv1d`",
    "separable_conv2d": "`nn.Sequential` of a depthwise and a pointwise "
                        "`nn.Conv2d`",
    "max_pool1d": "`F.max_pool1d` (same padding as `F.pad` with -inf)",
    "max_pool2d": "`F.max_pool2d` (same padding as `F.pad` with -inf)",
    "max_pool3d": "`F.max_pool3d`",
    "avg_pool1d": "`F.avg_pool1d`; padded cells excluded from averages",
    "avg_pool2d": "`F.avg_pool2d`; padded cells excluded from averages",
    "avg_pool3d": "`F.avg_pool3d`; padded cells excluded from averages",
    "global_avg_pool1d": "`mean` over the steps (keepdims)",
    "global_avg_pool2d": "`mean` over the spatial axes (keepdims)",
    "global_avg_pool3d": "`mean` over the spatial axes (keepdims)",
    "global_max_pool1d": "`amax` over the steps (keepdims)",
    "global_max_pool2d": "`amax` over the spatial axes (keepdims)",
    "global_max_pool3d": "`amax` over the spatial axes (keepdims)",
    "batch_norm": "`nn.BatchNorm1d/2d/3d` with Keras's eps and momentum",
    "layer_norm": "`nn.LayerNorm` with Keras's eps",
    "rms_norm": "`nn.RMSNorm` with Keras's eps",
    "group_norm": "`nn.GroupNorm`",
    "unit_normalization": "`F.normalize`",
    "activation_layer": "`F.*` / `torch.*` for every Keras 2 and Keras 3 "
                        "activation name",
    "relu_layer": "`F.relu`, `F.relu6`, `torch.clamp`, `F.leaky_relu`",
    "leaky_relu_layer": "`F.leaky_relu`",
    "elu_layer": "`F.elu`",
    "thresholded_relu_layer": "a `keras_relu` helper in model.py "
                              "(`x` where `x > theta`, else 0)",
    "softmax_layer": "`F.softmax`",
    "prelu_layer": "`nn.PReLU` (per-element slopes as `nn.Parameter`)",
    "dropout": "`nn.Dropout` (identity in `eval()`)",
    "spatial_dropout1d": "`nn.Dropout1d` (identity in `eval()`)",
    "spatial_dropout2d": "`nn.Dropout2d` (identity in `eval()`)",
    "spatial_dropout3d": "`nn.Dropout3d` (identity in `eval()`)",
    "alpha_dropout": "`nn.AlphaDropout` (identity in `eval()`)",
    "gaussian_noise": "a small `nn.Module` in model.py (identity in "
                      "`eval()`)",
    "gaussian_dropout": "a small `nn.Module` in model.py (identity in "
                        "`eval()`)",
    "activity_regularization": "identity",
    "identity_layer": "identity",
    "flatten": "`.flatten(1)` (channels-last order kept for the next "
               "Dense)",
    "reshape": "`.reshape`",
    "permute": "`.permute`",
    "zero_padding1d": "`F.pad`",
    "zero_padding2d": "`F.pad`",
    "zero_padding3d": "`F.pad`",
    "cropping1d": "slicing",
    "cropping2d": "slicing",
    "cropping3d": "slicing",
    "upsampling1d": "`repeat_interleave`",
    "upsampling2d": "`repeat_interleave` (nearest), `F.interpolate` "
                    "(bilinear)",
    "upsampling3d": "`repeat_interleave`",
    "resizing": "`F.interpolate` (after slicing or `F.pad` with "
                "crop/pad_to_aspect_ratio)",
    "center_crop": "slicing (`F.interpolate` when the input is smaller "
                   "than the crop)",
    "add": "`+`",
    "subtract": "`-`",
    "multiply": "`*`",
    "average": "`(a + b + ...) / n`",
    "maximum": "`torch.maximum`",
    "minimum": "`torch.minimum`",
    "concatenate": "`torch.cat`",
    "dot": "`torch.einsum` (`F.normalize` first with normalize=True)",
    "rescaling": "`x * scale + offset`",
    "normalization": "a small `Normalization` module in model.py "
                     "(`(x - mean) / sqrt(variance)`)",
    "layer_scale": "`nn.Parameter` scale",
    "stochastic_depth": "a `StochasticDepth` module in model.py (drops "
                        "residual branches in `train()`, identity in "
                        "`eval()`)",
    "custom_scale": "`x * scale`",
    "recurrent": "batch-first `nn.LSTM` / `nn.GRU` / `nn.RNN` (other "
                 "cells and dropout: a subclass of it, masks and states: "
                 "a `run_rnn` helper in model.py, one call of the RNN for "
                 "padding at the end, a step loop for other masks)",
    "bidirectional": "one `bidirectional=True` RNN, or the two directions "
                     "in an `nn.ModuleDict`",
    "time_distributed": "the inner layer's code on `x.flatten(0, 1)`, "
                        "then `.unflatten(0, (-1, T))`",
    "repeat_vector": "`.unsqueeze(1).expand`",
    "masking": "zeros where every feature equals `mask_value`, and a mask "
               "for the layers after",
    "conv_lstm": "a `ConvLSTM` module in model.py",
    "multi_head_attention": "a `MultiHeadAttention` module in model.py "
                            "(four `nn.Linear`, "
                            "`F.scaled_dot_product_attention`; explicit "
                            "scores when they are returned)",
    "grouped_query_attention": "a `GroupedQueryAttention` module in "
                               "model.py (`MultiHeadAttention`'s, key and "
                               "value heads shared by groups of query "
                               "heads)",
    "attention": "a `dot_attend` helper (`F.scaled_dot_product_attention`"
                 "); concat scores, or returned scores: explicit scores and "
                 "an `attend` helper",
    "additive_attention": "`tanh(q + k)` scores and an `attend` helper",
    "keras_op": "the matching `torch` / tensor operation",
    "tf_op_lambda": "the matching `torch` / tensor operation",
    "augmentation": "identity (as Keras at inference; a warning says "
                    "`train()` does not augment)",
    "cudnn_rnn": "as `LSTM` / `GRU(reset_after=True)`: `nn.LSTM` / "
                 "`nn.GRU`, weights converted from cuDNN's layout as Keras "
                 "loads them",
    "rnn_cell": "as `LSTM` / `GRU` / `SimpleRNN` with the cell's options; "
                "StackedRNNCells: one torch RNN per cell in an "
                "`nn.ModuleDict`",
    "locally_connected1d": "a `LocallyConnected1d` module in model.py "
                           "(`unfold` + `torch.einsum` over per-position "
                           "kernels)",
    "locally_connected2d": "a `LocallyConnected2d` module in model.py "
                           "(`unfold` + `torch.einsum` over per-position "
                           "kernels)",
    "category_encoding": "`F.one_hot` (summed for count, maxed for "
                         "multi_hot)",
    "discretization": "`torch.bucketize`",
    "einsum_dense": "an `EinsumDense` module in model.py "
                    "(`torch.einsum` + bias)",
    "adaptive_avg_pool1d": "`F.adaptive_avg_pool1d`",
    "adaptive_avg_pool2d": "`F.adaptive_avg_pool2d`",
    "adaptive_avg_pool3d": "`F.adaptive_avg_pool3d`",
    "adaptive_max_pool1d": "`F.adaptive_max_pool1d`",
    "adaptive_max_pool2d": "`F.adaptive_max_pool2d`",
    "adaptive_max_pool3d": "`F.adaptive_max_pool3d`",
}


def describe_rules(extra: dict | None = None) -> list[dict]:
    """Every registered rule: ``keras`` (the keys it is registered under),
    ``torch`` (what it becomes), ``rule`` (``module.function``),
    ``source`` (``builtin``, a rule pack's distribution name or a
    ``--rules`` file's path), grouped by rule function in registration
    order."""
    from .rules.registry import RULES
    table = dict(RULES)
    table.update(extra or {})
    groups: dict = {}
    for key, r in table.items():
        groups.setdefault(r.convert, []).append(key)
    out = []
    for fn, keys in groups.items():
        doc = (fn.__doc__ or "").strip().splitlines()
        torch_text = getattr(table[keys[0]], "torch", None) \
            or TORCH.get(fn.__name__) \
            or (doc[0] if doc and doc[0].startswith(("nn.", "F.", "torch."))
                else "")
        module = fn.__module__
        if module.startswith("migrate.rules."):
            module = module[len("migrate.rules."):]
        user_file = getattr(sys.modules.get(fn.__module__),
                            "__keras2torch_rules_file__", None)
        rule_name = (f"{os.path.basename(user_file)}:{fn.__name__}"
                     if user_file else f"{module}.{fn.__name__}")
        out.append({"keras": keys, "torch": torch_text, "rule": rule_name,
                    "source": table[keys[0]].pack or "builtin"})
    return out + _expanders()


def _expanders() -> list[dict]:
    """The model classes saved as their constructor arguments that are
    expanded into their graph (keras-hub Backbones and tasks)."""
    from .read.expand import EXPANDERS, find
    find({"registered_name": "keras_hub>GPT2Backbone"})  # registers them
    groups: dict = {}
    for key, fn in EXPANDERS.items():
        if not key.startswith("keras_nlp>"):  # older names of the same
            groups.setdefault(fn, []).append(key)
    out = []
    for fn, keys in groups.items():
        module = fn.__module__.replace("migrate.rules.", "")
        out.append({"keras": keys, "torch": "its layer graph, as keras-hub "
                    "builds it (model class, expanded from its arguments)",
                    "rule": f"{module}.{fn.__name__}", "source": "builtin"})
    return out


def keras_label(keys: list[str], limit: int | None = None) -> str:
    """``Conv2D, Convolution2D``; Keras 3 op nodes by their short names
    (``Keras 3 ops: Abs, Add, ...``), at most ``limit`` names."""
    prefix = ""
    if all(k.startswith("keras.src.ops.") for k in keys):
        keys = sorted({k.rsplit(".", 1)[-1] for k in keys})
        prefix = "Keras 3 ops: "
    more = ""
    if limit is not None and len(keys) > limit:
        keys, more = keys[:limit], f", ... ({len(keys)} in all)"
    return prefix + ", ".join(keys) + more


def rules_markdown(rows: list[dict]) -> str:
    """The README's layer table."""
    lines = ["| Keras | PyTorch | rule |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {keras_label(r['keras'])} | {r['torch'] or '?'} "
                     f"| `{r['rule']}` |")
    return "\n".join(lines) + "\n"
