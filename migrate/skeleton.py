"""Rule-file skeletons for what a model needs and no rule converts
(``keras2torch rules new MODEL``).

    text = rule_skeleton("model.keras")          # Python source
    Path("my_rules.py").write_text(text)         # then: --rules my_rules.py

For every layer class without a rule (or the one layer ``layer=`` names,
for which a rule may already exist: the skeleton then overrides it) and
every activation function without one, the file holds a rule that reads
what the model shows of it: the config keys with the values seen in this
model, the stored weights (names, shapes, dtypes, in storage order), the
input and output shapes of each call, and a body that refuses with "fill
me in" until it is written.  The file is valid Python that ``--rules``
loads as it is; the model is then reported as unsupported with that
message.

Shapes: inputs as the translator sees them where the layers before
convert; outputs, and inputs after unconverted layers, as Keras 3 recorded
them in the config (Keras 2 files record none).

Everything taken from the model file reaches the text escaped: names and
values as ``ascii()`` literals, Python names through
:func:`migrate.emit.names.identifier`, comments through
:func:`~migrate.emit.names.comment_text`; the result is parsed before it
is returned.
"""
from __future__ import annotations

import ast
import keyword
import os
import re
from dataclasses import dataclass, field

from .emit.names import comment_text, identifier
from .errors import ConversionError, UnsupportedLayers
from .graph import Graph, Layer
from .layout import identity
from .rules import registry
from .rules.activations import _KERAS2, _KERAS3, function_name
from .rules.base import IN, Emit, Out, Refused
from .weights import clean_weight_name

__all__ = ["NothingToWrite", "Wanted", "find_wanted", "render",
           "rule_skeleton"]

# Config keys every layer has, or that only matter for training.
_BASE_KEYS = {"name", "trainable", "dtype", "autocast", "batch_input_shape",
              "batch_shape", "_dtype_policy", "activity_regularizer",
              "input_dim", "input_length", "build_config"}
_TRAINING = re.compile(r"_(initializer|regularizer|constraint)$")
# Names the generated module and rule bodies use themselves.
_TAKEN = {"x", "call", "weights", "Emit", "Out", "Refused", "chain", "rule",
          "activation_rule", "identity", "fill_me_in", "migrate", "self",
          "torch", "nn", "F"}
_POSITIONAL = re.compile(r"^(?:.*/)?vars/(\d+)$")


class NothingToWrite(ConversionError):
    """Every layer and activation of the model has a rule."""


@dataclass
class Wanted:
    """One rule the model needs."""

    key: str  # the rule key: "pkg>Name", "Name", "activation:pkg>fn"
    kind: str  # "layer" | "activation"
    class_name: str  # the Keras class (a layer) or the function's name
    module: str | None = None
    layers: list[Layer] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # activation: layers
    # node id -> ([(input shape, dtype)], [output shape] or None)
    calls: dict = field(default_factory=dict)
    existing: str | None = None  # the rule it would override (--layer)
    num_outputs: int = 1  # the most outputs a call of it has
    # the built-in rule's key, when it exists: the other layers of the
    # class are handed to it
    builtin_key: str | None = None
    refused: dict = field(default_factory=dict)  # layer -> why (its rule)


def rule_skeleton(path, weights=None, *, layer: str | None = None,
                  rules: dict | None = None, plugins: bool = True,
                  command: str | None = None,
                  rules_file: str | None = None) -> str:
    """The rule-file text for the model at ``path`` (see the module doc).
    ``layer`` names one layer (Keras name or class name) to write a rule
    for, supported or not; ``rules`` and ``plugins`` as for
    :func:`migrate.convert` (rules they give are not asked for again);
    ``command`` and ``rules_file`` (where the text goes) are named in its
    docstring.  Raises :class:`NothingToWrite` when every layer has a
    rule, :class:`ConversionError` when ``layer`` names none."""
    from . import read as _read
    from .plugins import with_plugins
    table = with_plugins(rules, plugins)
    path = os.fspath(path)
    src = _read.open_model(path, None if weights is None
                           else os.fspath(weights))
    try:
        graph = src.graph
        wanted = find_wanted(graph, table, layer)
        if not wanted:
            if layer is not None:
                raise ConversionError(
                    f"{path}: no layer or layer class named {layer!r}")
            raise NothingToWrite(
                f"{path}: every layer has a rule, there is nothing to "
                "write (--layer NAME writes one that overrides a layer's "
                "rule)")
        recorded = _recorded_shapes(path)
        problems = _probe(graph, table, wanted, recorded)
        if layer is None and _add_refused(graph, table, wanted, problems):
            for w in wanted:
                w.calls.clear()
            _probe(graph, table, wanted, recorded)
    finally:
        src.close()
    if command is None:
        command = f"keras2torch rules new {path}"
    return render(wanted, command, path, rules_file)


# -- what the model needs ----------------------------------------------------
def rule_key(layer: Layer) -> str:
    """The key a rule for ``layer`` is looked up under first."""
    if layer.registered_name and layer.registered_name != layer.class_name:
        return layer.registered_name
    return registry.op_key(layer) if layer.is_op else layer.class_name


def find_wanted(graph: Graph, table: dict, only: str | None = None
                ) -> list[Wanted]:
    """The rules ``graph`` needs that neither ``table`` nor the built-in
    rules give (with ``only``: the rule for that layer or class, and that
    activation function), in order of first use."""
    builtin = _KERAS2 if graph.keras_major < 3 else _KERAS3
    out: dict[str, Wanted] = {}
    for layer in graph.layers():
        have = registry.lookup(layer, table)
        key = rule_key(layer)
        names = {layer.name, layer.keras_name, layer.class_name, key}
        if (only is None and have is None) or (only is not None
                                               and only in names):
            w = out.setdefault(key, Wanted(key, "layer", layer.class_name,
                                           layer.module))
            w.layers.append(layer)
            if have is not None:
                _existing(w, layer, have)
        raw = layer.config.get("activation")
        fn = function_name(raw)
        if (fn is None or (isinstance(raw, str) and raw in builtin)
                or (only is not None and only != fn)):
            continue
        akey = registry.activation_key(fn)
        if akey in table or akey in registry.RULES:
            continue
        w = out.setdefault(akey, Wanted(akey, "activation", fn))
        w.users.append(f"{layer.keras_name} ({layer.class_name})")
    return list(out.values())


def _existing(w: Wanted, layer: Layer, have) -> None:
    """``w`` overrides ``have``, the rule ``layer`` has now."""
    w.existing = have.name
    keys = [k for k in (layer.registered_name, layer.class_name)
            if k and registry.RULES.get(k) is have]
    w.builtin_key = keys[0] if keys else None


def _add_refused(graph: Graph, table: dict, wanted: list[Wanted],
                 problems: list) -> bool:
    """Add an override for each layer whose rule refuses it (an option
    the rule does not convert); True when there is one."""
    by_name = {layer.name: layer for layer in graph.layers()}
    keys = {w.key for w in wanted}
    added = False
    for name, _, why in problems:
        layer = by_name.get(name)
        have = registry.lookup(layer, table) if layer is not None else None
        key = rule_key(layer) if layer is not None else None
        if have is None or (key in keys and key not in {
                w.key for w in wanted if w.refused}) or why.startswith(
                "uses output "):
            continue
        w = next((w for w in wanted if w.key == key), None)
        if w is None:
            w = Wanted(key, "layer", layer.class_name, layer.module)
            _existing(w, layer, have)
            wanted.append(w)
            keys.add(key)
        if layer not in w.layers:
            w.layers.append(layer)
        w.refused[layer.name] = why
        added = True
    return added


def _probe(graph: Graph, table: dict, wanted: list[Wanted],
           recorded: dict) -> list:
    """Translate ``graph`` with a stand-in rule for each wanted layer class
    that records the shapes of its calls: inputs as the rules before it
    give them, outputs as Keras recorded them (and then passed on, so the
    layers after it are reached too)."""
    from .translate import Options, Translator
    stand_ins = {}
    for w in wanted:
        if w.kind != "layer":
            continue
        real = registry.lookup(w.layers[0], table) if w.existing else None
        stand_ins[w.key] = registry.Rule(w.key, _stand_in(w, real,
                                                          recorded))
    for w in wanted:  # an activation function: passed through
        if w.kind == "activation":
            stand_ins[w.key] = registry.Rule(w.key, lambda x: x.expr,
                                             kind="activation")
    probe = dict(table)
    probe.update(stand_ins)
    problems: list = []
    try:
        Translator(graph, Options("torch", None, probe)).run()
    except UnsupportedLayers as exc:  # what does not convert is the
        problems = list(exc.problems)  # point: shapes are recorded as far
    except Exception:  # as it went
        pass
    for w in wanted:  # calls the translation did not reach
        for node in graph.nodes:
            if node.layer in w.layers:
                w.num_outputs = max(w.num_outputs, node.num_outputs)
            if node.layer in w.layers and node.id not in w.calls:
                ins = recorded.get(("in", *_keras_node(node)))
                w.calls[node.id] = ([(s, "?") for s in ins or []],
                                    _recorded_outputs(node, recorded))
    return problems


def _stand_in(w: Wanted, real, recorded):
    def stand_in(call):
        node = call.node
        ins = [(t.shape, t.dtype) for t in call.inputs]
        if real is not None:
            w.calls[node.id] = (ins, _recorded_outputs(node, recorded))
            emit = real.convert(call)
            w.calls[node.id] = (ins, [o.shape for o in emit.outputs])
            return emit
        outs = _recorded_outputs(node, recorded)
        w.calls[node.id] = (ins, outs)
        if not outs or not call.inputs or any(s is None for s in outs):
            raise Refused("no recorded output shape")
        for i, t in enumerate(call.inputs):
            call.want(i, identity(t.rank))
        dtype = call.inputs[0].dtype
        return Emit([Out([IN(0)], tuple(s), identity(len(s)), dtype)
                     for s in outs])
    stand_in.__name__ = f"stand_in_{identifier(w.class_name)}"
    return stand_in


def _keras_node(node) -> tuple[str, int]:
    """(Keras layer name, call index) of a graph node."""
    k = int(node.id.rsplit("#", 1)[1]) if "#" in node.id else 0
    return node.layer.keras_name, k


def _recorded_outputs(node, recorded: dict) -> list | None:
    name, k = _keras_node(node)
    outs = []
    for i in range(node.num_outputs):
        shape = recorded.get(("out", name, k, i),
                             recorded.get(("out", name, 0, i)))
        outs.append(shape)
    return outs if any(s is not None for s in outs) else None


def _recorded_shapes(path: str) -> dict:
    """Tensor shapes Keras 3 wrote into the config: ``("out", layer, node,
    tensor) -> shape`` from every ``__keras_tensor__`` a call reads, and
    ``("in", layer, node) -> [shapes]`` for each call.  Empty when the
    file records none or cannot be read again."""
    try:
        config = _raw_config(path)
    except Exception:
        return {}
    shapes: dict = {}
    _walk(config, shapes, 0)
    return shapes


def _raw_config(path: str) -> dict:
    from .read.archive import read_archive
    from .read.config import load_json
    from .read.detect import sniff
    from .read.hdf5 import close_hdf5, open_hdf5, text_attr
    kind = sniff(path)
    if kind == "zip":
        archive = read_archive(path)
        close = getattr(archive.weights, "close", None)
        if close is not None:
            close()
        return archive.config
    if kind == "hdf5":
        f = open_hdf5(path, path)
        try:
            return load_json(text_attr(f, "model_config") or "{}", path)
        finally:
            close_hdf5(f)
    with open(path, "rb") as f:
        return load_json(f.read(64 << 20), path)


def _walk(value, shapes: dict, depth: int) -> None:
    if depth > 200:
        return
    if isinstance(value, list):
        for v in value:
            _walk(v, shapes, depth + 1)
        return
    if not isinstance(value, dict):
        return
    nodes = value.get("inbound_nodes")
    inner = value.get("config")
    name = value.get("name")
    if name is None and isinstance(inner, dict):
        name = inner.get("name")
    if isinstance(nodes, list) and isinstance(name, str):
        for j, node in enumerate(nodes):
            ins: list = []
            _tensors(node, ins, shapes, 0)
            if ins:
                shapes[("in", name, j)] = ins
    for v in value.values():
        _walk(v, shapes, depth + 1)


def _tensors(value, ins: list, shapes: dict, depth: int) -> None:
    if depth > 200:
        return
    if isinstance(value, list):
        for v in value:
            _tensors(v, ins, shapes, depth + 1)
    elif isinstance(value, dict):
        inner = value.get("config")
        if value.get("class_name") == "__keras_tensor__" and isinstance(
                inner, dict):
            shape, history = inner.get("shape"), inner.get("keras_history")
            if _is_shape(shape) and isinstance(history, list) and len(
                    history) >= 3 and isinstance(history[0], str) and all(
                    isinstance(h, int) for h in history[1:3]):
                shape = tuple(shape)
                ins.append(shape)
                shapes.setdefault(("out", history[0], history[1],
                                   history[2]), shape)
            return
        for v in value.values():
            _tensors(v, ins, shapes, depth + 1)


def _is_shape(shape) -> bool:
    return isinstance(shape, list) and len(shape) <= 64 and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool))
        for d in shape)


# -- the text -----------------------------------------------------------------
def render(wanted: list[Wanted], command: str, model: str,
           rules_file: str | None = None) -> str:
    """The rule file for ``wanted`` (valid Python; checked)."""
    names = _Names()
    blocks = [_layer_block(w, names) if w.kind == "layer"
              else _activation_block(w, names) for w in wanted]
    code = "".join(b.split("\n    fill_me_in(", 1)[0] for b in blocks)
    names = ["RULES", "Emit", "Out", "Refused", "activation_rule", "chain",
             "parameters", "rule"]
    used = [n for n in names if n in ("Refused", "Emit", "Out", "chain")
            or f"{n}(" in code or f"{n}[" in code
            or (n == "parameters" and "parameters(" in "".join(blocks))]
    imports = "from migrate.layout import identity\n" if (
        "identity(" in code) else ""
    imports += _wrap_import("from migrate.rules import ", used)
    head = _HEADER.format(
        name=comment_text(os.path.basename(model)),
        model=comment_text(model),
        rules_file=comment_text(rules_file or "THIS_FILE.py"),
        command=comment_text(command), imports=imports,
        what=_wrap_doc(", ".join(comment_text(w.key) for w in wanted)))
    text = head + "".join("\n\n" + b for b in blocks)
    ast.parse(text)  # never hand out a file that does not parse
    return text


_HEADER = '''"""Rules for what {name} needs and keras2torch has no rule for:
{what}.

Written by:
    {command}

Each rule below refuses ("fill me in") until you write its body: what the
layer computes, as torch code.  Then convert with it and compare with Keras:

    keras2torch convert {model} -o port/ \\\\
        --rules {rules_file} \\\\
        --verify --custom-objects YOUR_KERAS_CLASSES.py

A rule gets the layer's call: call.get(key, default) reads the config,
call.weights([...]) the stored weights (lazily: .shape, .read()),
call.inputs[i] the inputs (.shape: Keras shape with the batch; .layout: the
order of the torch axes; .expr: the code of the tensor).  It returns an Emit:
the forward code of each output (Out), the nn.Module it needs as self.<attr>
(module=...) and that module's state-dict entries (state={{...}}).
README, "Custom rules"; migrate/rules/base.py.
"""
{imports}

def fill_me_in(what):
    raise Refused(f"fill me in: {{what}} is a skeleton from `keras2torch rules "
                  f"new`; write its body in {{__file__}}")
'''


def _wrap_import(head: str, names: list[str]) -> str:
    line = head + ", ".join(names)
    if len(line) <= 79:
        return line + "\n"
    lines, line = [], head + "("
    for i, n in enumerate(names):
        item = n + ("," if i < len(names) - 1 else ")")
        if len(line) + len(item) + 1 > 79 and not line.endswith("("):
            lines.append(line.rstrip())
            line = " " * (len(head) + 1)
        line += item + " "
    lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def _wrap_doc(text: str) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > 75:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


class _Names:
    """Function names for the rules: identifiers, unique in the file."""

    def __init__(self):
        self.taken = set(_TAKEN)

    def get(self, text: str) -> str:
        return _unique(_snake(text), self.taken)


def _unique(base: str, taken: set) -> str:
    if keyword.iskeyword(base) or keyword.issoftkeyword(base):
        base += "_"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _snake(text: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", str(text).split(">")[-1])
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    return identifier(name, "custom")


def _literal(value, depth: int = 0) -> str:
    """A Python literal for a JSON value from the model (strings through
    ascii(): no quote, backslash, newline or non-ASCII character survives
    unescaped)."""
    if depth > 20:
        return "None"
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f'float("{value}")'
        return repr(value)
    if isinstance(value, str):
        return ascii(value)
    if isinstance(value, (list, tuple)):
        items = [_literal(v, depth + 1) for v in value]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        items = [f"{ascii(str(k))}: {_literal(v, depth + 1)}"
                 for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    return ascii(str(value))


def _shape_text(shape) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(int(d))
                           for d in shape) + ("," if len(shape) == 1
                                              else "") + ")"


def _comment(text: str, width: int = 75) -> list[str]:
    """``text`` (already escaped) as comment lines."""
    lines, line = [], "#"
    for word in text.split(" "):
        if len(line) + 1 + len(word) > width and line != "#":
            lines.append(line)
            line = "#  "
        line += " " + word
    lines.append(line)
    return lines


def _calls_comment(w: Wanted) -> list[str]:
    out = []
    for layer in w.layers:
        nodes = [(nid, c) for nid, c in w.calls.items()
                 if nid == layer.name or nid.startswith(layer.name + "#")]
        if not nodes:
            out.append(f"#   {comment_text(layer.keras_name)}: not called")
        for nid, (ins, outs) in nodes:
            i = ", ".join(f"{_shape_text(s)} {comment_text(d)}"
                          for s, d in ins) or "?"
            o = ", ".join(_shape_text(s) for s in outs) if outs else \
                "? (not recorded in this file)"
            out += ["#  " + c[1:] for c in _comment(
                f"{comment_text(nid)}: input {i} -> output {o}", 73)]
    return out


def _layer_block(w: Wanted, names: _Names) -> str:
    first = w.layers[0]
    fn = names.get(w.class_name)
    reg = (f", registered as {comment_text(w.key)}"
           if w.key != w.class_name else "")
    mod = f", module {comment_text(w.module)}" if w.module else ""
    lines = _comment(f"-- {comment_text(w.class_name)}{reg}{mod}")
    if w.existing:
        what = ("the built-in rule" if w.builtin_key
                else "the rule")
        lines += _comment(f"Replaces {what} {comment_text(w.existing)} "
                          "for this class (override=True)"
                          + (", which converts its other layers."
                             if w.builtin_key else "."))
    for name, why in w.refused.items():
        lines += _comment(f"{comment_text(w.existing)} refuses "
                          f"{comment_text(name)}: {comment_text(why)}")
    lines += _comment(f"Used by {len(w.layers)} layer(s); their calls (shapes "
                      "are Keras's, with the batch):")
    lines += _calls_comment(w)
    entries = first.weights.entries
    if entries:
        lines.append("# Weights, in storage order:")
        for e in entries:
            lines.append(f"#   {comment_text(e.key)}  "
                         f"{_shape_text(e.array.shape)}  "
                         f"{comment_text(e.array.dtype)}")
    else:
        lines.append("# No stored weights.")
    override = ", override=True" if w.existing else ""
    lines += ["", ""]
    builtin = f"{fn}_builtin"
    if w.builtin_key:
        lines += [f"{builtin} = RULES[{ascii(w.builtin_key)}]  "
                  "# keras2torch's rule", "", ""]
    lines += [f"@rule({ascii(w.key)}{override})", f"def {fn}(call):",
              f'    """What {comment_text(w.class_name)} computes (one line, '
              'shown by `keras2torch rules`)."""']
    if w.builtin_key:
        names = ", ".join(ascii(layer.name) for layer in w.layers)
        lines += [f"    if call.layer.name not in ({names},):  # the others",
                  f"        return {builtin}.convert(call)"]
    local = set(_TAKEN)
    n_in = max((len(c[0]) for c in w.calls.values()), default=1) or 1
    if n_in == 1:
        lines.append("    x = call.inputs[0]")
        ranks = {len(s) for c in w.calls.values() for s, _ in c[0][:1]}
        if any(r >= 3 for r in ranks):
            lines += ["    # in Keras's axis order (B, ..., C); or work in "
                      "the order x.layout says",
                      "    x = call.want(0, identity(x.rank))"]
    else:
        lines.append(f"    inputs = call.inputs  # {n_in} tensors")
        local.add("inputs")
    lines += _config_lines(w, local)
    wlines, variables = _weight_lines(entries, local)
    lines += wlines
    lines.append(f"    fill_me_in({ascii('the rule for ' + w.key)})")
    lines += _example(w, n_in, variables)
    return "\n".join(lines) + "\n"


def _config_lines(w: Wanted, local: set) -> list[str]:
    keys: list[str] = []
    for layer in w.layers:
        for k in layer.config:
            if isinstance(k, str) and k not in keys and k not in _BASE_KEYS:
                keys.append(k)
    lines, skipped = [], []
    for k in keys:
        if _TRAINING.search(k):
            skipped.append(k)
            continue
        values = [layer.config.get(k) for layer in w.layers]
        seen = []
        for v in values:
            text = _literal(v)
            if text not in seen:
                seen.append(text)
        var = _unique(identifier(k, "option"), local)
        line = f"    {var} = call.get({ascii(k)}, {seen[0]})"
        if len(seen) == 1 and len(line) <= 79:
            lines.append(line)  # the default: the value in this model
            continue
        shown = ", ".join(seen)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        lines += ["    " + c for c in _comment(
            f"{comment_text(k)} seen: {comment_text(shown)}", 71)]
        lines.append(f"    {var} = call.get({ascii(k)})")
    if skipped:
        lines += ["    " + c for c in _comment(
            "not needed to run the layer: " + ", ".join(
                comment_text(k) for k in skipped), 71)]
    return lines


def _weight_lines(entries, local: set) -> list[str]:
    if not entries:
        return [], []
    positional = all(_POSITIONAL.match(e.key) for e in entries)
    names = []
    for i, e in enumerate(entries):
        if positional:
            names.append(f"weight_{i}")
            continue
        tail = clean_weight_name(e.key).split("/")[-1]
        names.append(tail)
    if not positional and len(set(names)) < len(names):
        names = [clean_weight_name(e.key) for e in entries]
    variables = [_unique(identifier(n, "weight"), local) for n in names]
    lines = []
    if positional:
        lines += ["    " + c for c in _comment(
            "Keras 3 files store weights by position: name them after the "
            "layer's add_weight calls, in order (the names then bind .h5 "
            "files too).", 71)]
    listed = ", ".join(ascii(n) for n in names)
    line = f"    weights = call.weights([{listed}])"
    lines.append(line if len(line) <= 79 else
                 f"    weights = call.weights([\n        {listed}])")
    for var, n, e in zip(variables, names, entries):
        lines.append(f"    {var} = weights[{ascii(n)}]  # "
                     f"{_shape_text(e.array.shape)} "
                     f"{comment_text(e.array.dtype)}")
    return lines, variables


def _example(w: Wanted, n_in: int, variables: list[str]) -> list[str]:
    same = all(outs and len(outs) == 1 and ins and outs[0] == ins[0][0]
               for ins, outs in w.calls.values()) and w.calls
    shape = "x.shape" if same and n_in == 1 else "out_shape"
    x = "x" if n_in == 1 else "inputs[0]"
    n_out = max([w.num_outputs] + [len(outs) for _, outs in
                                   w.calls.values() if outs])
    lines = ["    # Then return what the layer computes, for example:"]
    if shape == "out_shape":
        lines.append("    # out_shape = ...  # the Keras output shape, as "
                     "seen above")
    if variables:
        v = variables[0]
        args = ", ".join(f"{n}={n}" for n in variables)
        lines += [f"    # module, state = parameters({args})",
                  f'    # code = f"{{{x}.expr}} * self.{{call.attr}}.{v}"',
                  f"    # return Emit([Out(chain(code), {shape}, "
                  f"{x}.layout)],",
                  "    #             module=module, state=state)"]
    elif n_out > 1:
        lines += [f'    # return Emit([Out(chain(f"{{{x}.expr}} * 2.0"), '
                  f"{shape}, {x}.layout),",
                  f"    #              ...])  # one Out per output ({n_out})"]
    else:
        lines.append(f'    # return Emit([Out(chain(f"{{{x}.expr}} * 2.0"), '
                     f"{shape}, {x}.layout)])")
    return lines


def _activation_block(w: Wanted, names: _Names) -> str:
    fn = names.get(w.class_name)
    lines = [f"# -- activation function {comment_text(w.class_name)}"]
    lines += _comment("Used by: " + ", ".join(comment_text(u)
                                              for u in w.users))
    lines += ["", "", f"@activation_rule({ascii(w.class_name)})",
              f"def {fn}(x):",
              f'    """What {comment_text(w.class_name)} computes."""',
              "    fill_me_in("
              f"{ascii('the activation rule for ' + w.class_name)})",
              "    # Then return it as an expression of x.expr (a string) or "
              "an Emit, e.g.:",
              '    # return f"F.relu({x.expr})"']
    return "\n".join(lines) + "\n"
