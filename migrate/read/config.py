"""Model config JSON -> a tree of models and layers, normalised.

:func:`parse_model` turns the ``{"class_name", "config"}`` dict of a
Sequential or Functional model (Keras 2 or Keras 3 schema, spec section 1.4)
into a :class:`ModelSpec`: the model's ``layers`` entries as
:class:`Member`, in config order, each holding either a
:class:`migrate.graph.Layer` (ordinary layers and Keras 3 op nodes), a nested
:class:`ModelSpec` (a Functional or Sequential used as a layer), or nothing
(InputLayers).  :mod:`migrate.read.inline` then turns that tree into the flat
:class:`migrate.graph.Graph`, and the weight readers walk the same tree.

Layer names: top-level layers keep their Keras name; layers of a nested
model are named by their scope path, ``"inner/dense"``.  Keras 2 allowed
``/`` in names (tf-keras MobileNetV3 has ``"Conv/BatchNorm"``); such names
are kept as they are.

Every layer config is normalised here, once, so rules see one shape:

* ``shared_object_id`` keys are dropped, at any depth;
* ``dtype`` given as a policy dict (Keras 3 ``DTypePolicy``, Keras 2
  ``Policy``) becomes the plain variable dtype string, ``"float32"``; a
  policy that is not a plain dtype (``mixed_float16``, ``mixed_bfloat16``,
  quantized ``int8_from_float32``...) becomes the dtype of its variables
  (``"float32"``) and the original dict is kept under ``"_dtype_policy"``;
* Keras 2 ``batch_input_shape`` becomes ``batch_shape``;
* LeakyReLU's Keras 2 ``alpha`` becomes ``negative_slope``;
* BatchNormalization ``axis`` given as a one-element list becomes an int;
* LayerNormalization ``axis`` is always a list of ints;
* ``activation`` and ``recurrent_activation`` given as a Keras function
  dict (``{"class_name": "function", "config": "relu"}``, with or without a
  ``keras.*`` module) become the plain string ``"relu"``; other dicts
  (custom functions, layer objects) are left as they are;
* layer configs nested under ``layer``, ``forward_layer``,
  ``backward_layer``, ``cell`` and ``cells`` (wrappers, RNNs) get the same
  treatment.

``Layer.module`` and ``Layer.registered_name`` come from the entry (``None``
when the writer left them out, as Keras 2 and every legacy ``.h5`` do).  A
tf-keras ``.h5`` writes a registered class as ``"class_name":
"Custom>CustomScaleLayer"``: that becomes ``registered_name``, and
``class_name`` the part after ``>``.
Keras 3 op nodes in a legacy ``.h5`` lost their module; they are recognised
by their config (see :mod:`migrate.read.ops_table`) and given it back.

The config is untrusted input, checked here before anything uses it:
entries have the types Keras writes (names, modules and registered names
are strings, ``inbound_nodes`` a list), the tree is at most
:data:`MAX_DEPTH` deep, and every dimension (``units``, ``filters``,
``kernel_size``, ``batch_shape``...) is an integer in ``[1, MAX_DIM]``
(``target_shape`` may hold one ``-1``, shapes ``None``), so no later stage
can be asked to build or allocate an absurd size.  A custom layer's keys
(a class registered under a package, or from a module outside Keras) are
its author's: sentinels such as ``num_heads = -1`` ("infer it") pass, and
its rule judges them; only integers above ``MAX_DIM`` are refused here.  A ``Lambda`` layer's
bytecode is replaced by a placeholder without being decoded (nothing from
a model file is ever unmarshalled, unpickled or evaluated).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import ConversionError
from ..graph import Layer
from .expand import expand, find as find_expander
from .hdf5 import first_line
from .ops_table import OP_MODULES, op_module

# class names of model containers
FUNCTIONAL = ("Functional", "Model")
SEQUENTIAL = "Sequential"
INPUT_LAYER = "InputLayer"

_PLAIN_DTYPES = {
    "float16", "float32", "float64", "bfloat16", "int8", "int16", "int32",
    "int64", "uint8", "uint16", "uint32", "uint64", "bool", "complex64",
    "complex128", "string"}
_WRAPPED = ("layer", "forward_layer", "backward_layer", "cell")

MAX_DEPTH = 200  # nesting of lists and dicts in a config
MAX_DIM = 2 ** 31 - 1  # any one dimension
MAX_INPUT_SIZE = 2 ** 31  # elements of one example of an input
# config key -> (allowed as a list of dims, None allowed, -1 allowed)
_DIM_KEYS = {
    "units": (False, False, False), "filters": (False, False, False),
    "input_dim": (False, False, False), "output_dim": (False, False, False),
    "num_heads": (False, False, False), "key_dim": (False, False, False),
    "value_dim": (False, True, False), "n": (False, False, False),
    "depth_multiplier": (False, False, False),
    "groups": (False, False, True),  # GroupNormalization: -1 = per channel
    "kernel_size": (True, False, False), "strides": (True, True, False),
    "pool_size": (True, False, False), "dilation_rate": (True, False, False),
    "size": (True, False, False),
    "batch_shape": (True, True, False), "shape": (True, True, True),
    "target_shape": (True, True, True), "dims": (True, False, False),
}
LAMBDA_CODE = "<Python bytecode, not read>"


@dataclass
class Member:
    """One entry of a model's ``layers`` list."""

    name: str  # the Keras name, unique within its model
    class_name: str
    entry: dict  # the raw entry; its "config" is normalised
    layer: Layer | None = None  # ordinary layers and op nodes
    model: ModelSpec | None = None  # a nested Functional / Sequential

    @property
    def is_input(self) -> bool:
        return self.class_name == INPUT_LAYER and self.model is None

    @property
    def config(self) -> dict:
        return self.entry["config"]


@dataclass
class ModelSpec:
    """A Functional or Sequential model config, parsed."""

    name: str
    kind: str  # "functional" | "sequential"
    class_name: str
    scope: str  # prefix of its layers' names: "" or "inner/"
    config: dict  # input_layers, output_layers, build_input_shape, ...
    entry: dict  # the whole {"class_name", "config", "build_config"...}
    members: list[Member] = field(default_factory=list)
    _by_name: dict = field(default_factory=dict, repr=False)

    def add(self, member: Member, label: str) -> None:
        if member.name in self._by_name:
            raise ConversionError(f"{label}: model {self.name!r} has two "
                                  f"layers named {member.name!r}")
        self.members.append(member)
        self._by_name[member.name] = member

    def member(self, name: str) -> Member | None:
        return self._by_name.get(name)

    def leaves(self):
        """``(member, owning spec)`` for every non-model member, nested
        models included, depth first."""
        for m in self.members:
            if m.model is not None:
                yield from m.model.leaves()
            else:
                yield m, self


def load_json(text: str | bytes, label: str) -> dict:
    """Parse config JSON text, with a one-line error."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConversionError(
            f"{label}: model config is not valid JSON ({first_line(exc)})") \
            from None
    if not isinstance(value, dict):
        raise ConversionError(f"{label}: model config is not a JSON object")
    return value


def model_kind(entry: dict) -> str | None:
    """``"functional"``, ``"sequential"`` or ``None`` (an ordinary layer)."""
    cfg = entry.get("config")
    if entry.get("class_name") == SEQUENTIAL or isinstance(cfg, list):
        return "sequential"
    if isinstance(cfg, dict) and "layers" in cfg and (
            "output_layers" in cfg or entry.get("class_name") in FUNCTIONAL):
        return "functional"
    return None


def parse_model(entry: dict, label: str, scope: str = "") -> ModelSpec:
    """Parse a model entry (the top-level config or a nested model)."""
    if not isinstance(entry, dict) or not isinstance(
            entry.get("class_name"), str):
        raise ConversionError(f"{label}: config has no 'class_name', not a "
                              "Keras model config")
    if scope == "":
        _check_depth(entry, label)
    kind = model_kind(entry)
    cls = entry.get("class_name")
    if kind is None:
        expanded = expand(entry, label)
        if expanded is not None:  # a keras-hub Backbone, task model...
            return parse_model(expanded, label, scope)
        if isinstance(entry.get("config"), dict) and scope == "":
            raise ConversionError(
                f"{label}: the model is a {cls!r} whose config has no layer "
                "graph (a subclassed model?); only Sequential and "
                "Functional models can be read")
        raise ConversionError(f"{label}: {cls!r} is not a Keras model config")
    cfg = entry.get("config")
    if isinstance(cfg, list):  # Keras <= 2.2 Sequential: a bare layer list
        cfg = {"name": entry.get("name") or "sequential", "layers": cfg}
    if not isinstance(cfg, dict):
        raise ConversionError(f"{label}: model config of {cls!r} is not a "
                              "JSON object")
    name = str(cfg.get("name") or entry.get("name") or kind)
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConversionError(f"{label}: model {name!r} has no layer list")
    spec = ModelSpec(name, kind, cls, scope, cfg, entry)
    for raw in layers:
        spec.add(_member(raw, spec, label), label)
    return spec


def _member(raw, spec: ModelSpec, label: str) -> Member:
    if not isinstance(raw, dict) or not isinstance(raw.get("class_name"),
                                                   str):
        raise ConversionError(f"{label}: model {spec.name!r} has a layer "
                              "entry without 'class_name'")
    cls = raw["class_name"]
    registered = raw.get("registered_name")
    if ">" in cls:  # tf-keras .h5 writes "Package>Name" as the class name
        registered, cls = cls, cls.rsplit(">", 1)[1]
    cfg = raw.get("config")
    name = raw.get("name") or (cfg.get("name") if isinstance(cfg, dict)
                               else None)
    if not isinstance(name, str) or not name:
        raise ConversionError(f"{label}: a {cls} layer of model "
                              f"{spec.name!r} has no name")
    where = f"{label}: layer {name!r} ({_short(cls)})"
    for key in ("module", "registered_name"):
        if not isinstance(raw.get(key), (str, type(None))):
            raise ConversionError(f"{where}: {key!r} is not a string")
    if not isinstance(raw.get("inbound_nodes"), (list, type(None))):
        raise ConversionError(f"{where}: 'inbound_nodes' is not a list")
    if model_kind(raw) is not None or find_expander(raw) is not None:
        inner = parse_model(raw, label, f"{spec.scope}{name}/")
        return Member(name, cls, raw, model=inner)
    if not isinstance(cfg, dict):
        raise ConversionError(f"{label}: layer {name!r} has no config dict")
    check_dims(cfg, where, custom=is_custom(raw.get("module"), registered))
    entry = dict(raw, config=normalize_config(cls, cfg))
    if cls == INPUT_LAYER:
        return Member(name, cls, entry)
    module = raw.get("module")
    if module is None and _is_lost_op(raw):
        module = op_module(cls)
    layer = Layer(name=spec.scope + name, class_name=cls,
                  config=entry["config"], module=module,
                  registered_name=registered)
    return Member(name, cls, entry, layer=layer)


# -- validation ------------------------------------------------------------
def _short(value, n: int = 60) -> str:
    text = str(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def _check_depth(value, label: str) -> None:
    """Refuse configs nested deeper than :data:`MAX_DEPTH` (every later
    stage walks the config recursively)."""
    if not isinstance(value, (dict, list)):
        return
    stack = [(value, 0)]
    while stack:  # only containers go on the stack, not every leaf
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConversionError(f"{label}: model config is nested more "
                                  f"than {MAX_DEPTH} levels deep")
        for x in (v.values() if isinstance(v, dict) else v):
            if isinstance(x, (dict, list)):
                stack.append((x, depth + 1))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_custom(module, registered) -> bool:
    """A layer class that is not Keras's own: registered under a package
    (``"kecamCommon>ChannelAffine"``, ``"Custom>..."``) or defined in a
    module outside Keras.  Its config keys mean what its author meant."""
    if isinstance(registered, str) and ">" in registered:
        return True
    return isinstance(module, str) and not module.split(".", 1)[0] in (
        "keras", "tf_keras", "keras_core", "tensorflow")


def check_dims(cfg: dict, where: str, custom: bool = False) -> None:
    """Every dimension in a layer config is an integer in ``[1, MAX_DIM]``
    (see ``_DIM_KEYS`` for where ``None`` and ``-1`` are allowed).

    A ``custom`` layer's keys are not Keras's: ``num_heads = -1`` may mean
    "infer it from the input" (kecam), so only the absurd-size guard
    applies (no integer above ``MAX_DIM``); whatever else the value means,
    its rule judges, and a layer without a rule is reported with every
    other missing piece of the model."""
    for key, (many, none_ok, minus_one) in _DIM_KEYS.items():
        value = cfg.get(key)
        if value is None:
            continue
        dims = value if many and isinstance(value, (list, tuple)) \
            else [value]
        if custom:
            dims = value if isinstance(value, (list, tuple)) else [value]
            if any(_is_int(d) and d > MAX_DIM for d in dims):
                raise ConversionError(
                    f"{where}: {key} = {_short(repr(value))} is over the "
                    f"limit of {MAX_DIM} for any dimension")
            continue
        for d in dims:
            if d is None and none_ok:
                continue
            if d == -1 and minus_one and _is_int(d):
                continue
            if not _is_int(d) or not 1 <= d <= MAX_DIM:
                raise ConversionError(
                    f"{where}: {key} = {_short(repr(value))} is not a "
                    f"valid dimension (integers from 1 to {MAX_DIM})")
    inner = [cfg.get(k) for k in _WRAPPED]  # wrappers' and RNNs' layers
    if isinstance(cfg.get("cells"), list):
        inner += cfg["cells"]
    for sub in inner:
        if isinstance(sub, dict) and isinstance(sub.get("config"), dict):
            name = sub.get("class_name")
            check_dims(sub["config"], f"{where} > {_short(name)}",
                       custom=is_custom(sub.get("module"), (
                           name if isinstance(name, str) and ">" in name
                           else sub.get("registered_name"))))
    for key in ("batch_shape", "shape"):
        value = cfg.get(key)
        if isinstance(value, (list, tuple)):
            size = 1
            for d in value[1:] if key == "batch_shape" else value:
                size *= d if _is_int(d) else 1
            if size > MAX_INPUT_SIZE:
                raise ConversionError(
                    f"{where}: {key} = {_short(value)} has {size} elements "
                    f"per example, over the limit of {MAX_INPUT_SIZE}")


def _is_lost_op(raw: dict) -> bool:
    """A Keras 3 op node written without its module (legacy ``.h5``): a
    known op class name whose nodes use the Keras 3 form and whose config
    lacks the ``trainable`` key that a layer's config has (most do: the
    preprocessing layers, e.g. Discretization, do not)."""
    nodes = raw.get("inbound_nodes") or []
    return (raw["class_name"] in OP_MODULES
            and "trainable" not in raw["config"] and bool(nodes)
            and all(isinstance(n, dict) and "args" in n for n in nodes))


# -- normalisation ----------------------------------------------------------
def normalize_config(class_name: str, config: dict) -> dict:
    """A normalised copy of one layer's config (see the module docstring)."""
    cfg = _drop_shared_ids(config)
    if class_name == "Lambda":
        _drop_code(cfg)
    if "dtype" in cfg:
        dtype, policy = dtype_of(cfg["dtype"])
        if policy is not None:
            cfg["_dtype_policy"] = policy
        cfg["dtype"] = dtype
    if "batch_input_shape" in cfg:
        shape = cfg.pop("batch_input_shape")
        cfg.setdefault("batch_shape", shape)
    if class_name == "LeakyReLU" and "alpha" in cfg:
        alpha = cfg.pop("alpha")
        cfg.setdefault("negative_slope", alpha)
    if class_name == "BatchNormalization":
        axis = cfg.get("axis")
        if isinstance(axis, list) and len(axis) == 1:
            cfg["axis"] = axis[0]
    if class_name == "LayerNormalization" and "axis" in cfg:
        axis = cfg["axis"]
        cfg["axis"] = list(axis) if isinstance(axis, (list, tuple)) \
            else [axis]
    for key in ("activation", "recurrent_activation"):
        if key in cfg:
            cfg[key] = activation_name(cfg[key])
    for key in _WRAPPED:
        if key in cfg:
            cfg[key] = _normalize_wrapped(cfg[key])
    if isinstance(cfg.get("cells"), list):
        cfg["cells"] = [_normalize_wrapped(c) for c in cfg["cells"]]
    return cfg


def _drop_code(cfg: dict) -> None:
    """Replace a Lambda layer's bytecode by :data:`LAMBDA_CODE`, unread.

    Keras 3 writes ``{"class_name": "__lambda__", "config": {"code":
    base64 marshal...}}``; Keras 2 a ``[code, defaults, closure]`` list (or
    the code string) with ``function_type = "lambda"``.  The name of a
    module-level function (``function_type = "function"``) is kept."""
    for key in ("function", "output_shape", "mask"):
        value = cfg.get(key)
        lam = (isinstance(value, dict)
               and value.get("class_name") == "__lambda__") or (
            cfg.get(f"{key}_type" if key != "function" else "function_type")
            == "lambda" and value is not None)
        if lam:
            cfg[key] = LAMBDA_CODE


def _normalize_wrapped(value):
    if (isinstance(value, dict) and isinstance(value.get("class_name"), str)
            and isinstance(value.get("config"), dict)):
        return dict(value, config=normalize_config(value["class_name"],
                                                   value["config"]))
    return value


def _drop_shared_ids(value):
    if isinstance(value, dict):
        return {k: _drop_shared_ids(v) for k, v in value.items()
                if k != "shared_object_id"}
    if isinstance(value, list):
        return [_drop_shared_ids(v) for v in value]
    return value


def dtype_of(value) -> tuple[str, dict | None]:
    """``(variable dtype, policy dict or None)`` for a config ``dtype``."""
    if value is None:
        return "float32", None
    if isinstance(value, str):
        name, policy = value, None
    elif isinstance(value, dict):
        inner = value.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        if not isinstance(name, str):
            return "float32", value
        policy = value
    else:
        return str(value), None
    if name in _PLAIN_DTYPES:
        return name, None
    # "mixed_float16" keeps float32 variables; "int8_from_float32" and
    # other quantized policies name their source policy after "_from_".
    source = name.split("_from_", 1)[1] if "_from_" in name else name
    if source.startswith("mixed_") or source not in _PLAIN_DTYPES:
        source = "float32"
    return source, policy if policy is not None else {"name": name}


def activation_name(value):
    """``{"class_name": "function", "config": "relu"}`` -> ``"relu"``."""
    if (isinstance(value, dict) and value.get("class_name") == "function"
            and isinstance(value.get("config"), str)):
        module = value.get("module")
        if module is None or str(module).split(".", 1)[0] in (
                "keras", "tf_keras"):
            return value["config"]
    return value
