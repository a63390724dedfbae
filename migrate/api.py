"""The library entry point: ``convert(path) -> Conversion``.

    conv = migrate.convert("model.keras")
    model = conv.module()              # nn.Module with the weights loaded
    conv.save("out/")                  # model.py, model.safetensors, conversion.json

Conversion reads the model file (never importing TensorFlow), translates its
graph through the rule table, renders ``model.py``, checks that the source
compiles and that its ``state_dict`` keys are exactly the converted weights,
and only then hands the result back.

Weights stay in the model file until they are needed: ``Conversion.state_dict``
is a lazy mapping (a tensor is read and converted on first access, and its
shape checked against the generated module), and ``save`` streams them to the
output one tensor at a time.  The model file stays open while the Conversion
lives; ``close()`` (or ``with migrate.convert(...) as conv:``) releases it.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .emit.source import render, shell_word
from .errors import ConversionError
from . import read as _read
from .stream import LazyStateDict, Spec
from .translate import Options, Program, translate

WEIGHT_FILES = {"safetensors": "model.safetensors", "pt": "model.pt"}


@dataclass
class Conversion:
    """A converted model: source, report, and lazily read weights."""

    source: str  # the text of model.py
    state_dict: LazyStateDict  # {key: torch.Tensor}, read on first access
    program: Program = field(repr=False)
    source_info: dict = field(default_factory=dict)
    weights_format: str = "safetensors"
    parity: dict | None = None
    _params: dict = field(default_factory=dict, repr=False)
    # the extra rules used (--rules and rule packs): verify traces with them
    rules: dict | None = field(default=None, repr=False)
    rules_used: list = field(default_factory=list)  # conversion.json "rules"
    # the file's compile config and optimizer variables (None: uncompiled)
    training_source: object = field(default=None, repr=False)
    _training: object = field(default=None, repr=False)

    @property
    def class_name(self) -> str:
        return self.program.class_name

    @property
    def num_values(self) -> int:
        """How many numbers the weights hold (without reading them)."""
        return self.state_dict.num_values

    def close(self) -> None:
        """Release the model file.  Weights read before stay available;
        reading another one then raises a ConversionError."""
        self.state_dict.close()

    def __enter__(self) -> "Conversion":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def report(self) -> dict:
        """The content of ``conversion.json``."""
        from .report import build_report
        return build_report(self)

    def weight_map(self) -> list[dict]:
        """For every state-dict key: the Keras layer, the Keras variable
        path(s) it is made of (``variable.path`` in Keras 3, ``variable.
        name`` without ``:0`` in tf.keras) and the transform, in words:
        ``[{torch, keras_layer, keras_variables, transform}]``."""
        from .weightmap import weight_map
        specs = getattr(self.state_dict, "specs", None)  # a plain dict:
        keys = list(specs if specs is not None else self.state_dict)  # tests
        return weight_map(self.program.state, keys)

    def map_arrays(self, arrays: dict, keys=None) -> dict[str, torch.Tensor]:
        """``{keras_variable_path: array}`` -> ``{state_dict_key: tensor}``
        through exactly the transforms the weights go through: map Keras's
        gradients, optimizer slots or a fine-tuned copy onto the port.
        Entries whose variables are not all given are left out; ``keys``,
        only those state-dict keys."""
        from .stream import to_tensor
        from .weightmap import map_arrays
        specs = self.state_dict.specs
        state = self.program.state if keys is None else {
            k: v for k, v in self.program.state.items() if k in keys}
        return map_arrays(state, arrays,
                          lambda key, value: to_tensor(key, value,
                                                       specs[key]))

    def map_gradients(self, arrays: dict, keys=None
                      ) -> dict[str, torch.Tensor]:
        """``{keras_variable_path: gradient}`` -> ``{state_dict_key:
        tensor}`` through the linear part of each weight's transform: the
        same transposes and reshapes as :meth:`map_arrays`, without an
        offset (Gemma's norm weight is ``1 + scale``: its gradient is the
        scale's).  For gradients and optimizer moments; values (a fine-tuned
        copy) go through :meth:`map_arrays`."""
        import numpy as np
        # The transforms compute in float32, where 1 + g rounds g: scaled by
        # one power of two (exact) so that the largest array is 2**20, each
        # keeps float32's precision next to the offset.
        top = max((float(np.abs(g).max()) for g in arrays.values()
                   if np.size(g)), default=0.0)
        scale = 2.0 ** (20 - np.ceil(np.log2(top))) if top > 0 else 1.0
        mapped = self.map_arrays({k: np.asarray(g, np.float32)
                                  * np.float32(scale)
                                  for k, g in arrays.items()}, keys)
        zero = self.map_arrays({k: np.zeros(np.shape(g), np.float32)
                                for k, g in arrays.items()}, keys)
        return {k: (v - zero[k]) / scale if k in zero else v / scale
                for k, v in mapped.items()}

    @property
    def training(self):
        """The training port (:mod:`migrate.training.emit`): ``source``
        (the text of training.py), ``state`` (the tensors of
        optimizer.safetensors), ``info`` (conversion.json's ``training``)
        and ``warnings``; ``None`` when the file has no compile config."""
        if self._training is None and self.training_source is not None:
            from .training.emit import build
            self._training = build(self, self.training_source)
        return self._training

    def module_class(self) -> type:
        """The generated ``nn.Module`` subclass (source executed in a fresh
        namespace; it is our own generated code, not the model file's)."""
        namespace: dict = {"__name__": "keras2torch_generated"}
        exec(compile(self.source, "model.py", "exec"), namespace)
        return namespace[self.class_name]

    def module(self) -> torch.nn.Module:
        """An instance of the port with the converted weights, in eval mode."""
        # weights first: each is checked against the config's shapes, so a
        # config that claims huge layers fails before torch allocates them
        state = dict(self.state_dict)
        model = self.module_class()()
        model.load_state_dict(state, strict=True)
        return model.eval()

    def save(self, outdir, *, force: bool = False,
             weights_format: str | None = None) -> Path:
        """Write model.py, the weights and conversion.json to ``outdir``,
        all or nothing."""
        from .write import write_outdir
        if weights_format:
            self.weights_format = weights_format
        return write_outdir(self, Path(outdir), force=force)


def convert(path, weights=None, *, class_name: str | None = None,
            layout: str = "torch", weights_format: str = "safetensors",
            rules: dict | None = None, plugins: bool = True,
            flat: bool = False) -> Conversion:
    """Convert a Keras model file.

    ``path`` is a ``.keras`` archive, a legacy full-model ``.h5``, or a JSON
    config (``model.to_json()``) with ``weights`` a Keras 2 or Keras 3
    weights file.  ``layout="keras"`` keeps Keras's channels-last layout at
    the port's inputs and outputs.  ``rules`` maps Keras class (or registered)
    names to extra :class:`migrate.rules.Rule` objects; they come before
    the installed rule packs' (:mod:`migrate.plugins`), which
    ``plugins=False`` leaves out.  Repeated blocks become classes
    (:mod:`migrate.fold`); ``flat=True`` keeps one straight-line forward.
    """
    if layout not in ("torch", "keras"):
        raise ConversionError(f"layout must be 'torch' or 'keras', not "
                              f"{layout!r}")
    if weights_format not in WEIGHT_FILES:
        raise ConversionError(f"weights format must be one of "
                              f"{sorted(WEIGHT_FILES)}")
    if class_name is not None and not (class_name.isidentifier()
                                       and class_name.isascii()):
        raise ConversionError(f"class name {class_name!r} is not a Python "
                              "identifier")
    from .plugins import with_plugins
    rules = with_plugins(rules, plugins)
    src = _read.open_model(os.fspath(path), None if weights is None
                           else os.fspath(weights))
    try:
        program = translate(src.graph, Options(layout, class_name, rules,
                                               flat=flat))
        flags = "" if layout == "torch" else " --layout keras"
        if flat:
            flags += " --flat"
        if class_name:
            flags += f" --class-name {class_name}"
        cmd = shell_word(os.path.basename(os.fspath(path)), "MODEL_FILE")
        if weights is not None:
            cmd += " --weights " + shell_word(
                os.path.basename(os.fspath(weights)), "WEIGHTS_FILE")
        source = render(program, flags, cmd)
        info = {"path": os.fspath(path), "sha256": "",
                "format": src.format, "keras_version": src.keras_version}
        if weights is not None:
            info["weights_path"] = os.fspath(weights)
        conv = Conversion(source, None, program, info, weights_format)
        conv.rules = rules
        conv.training_source = src.training
        from .plugins import rules_used
        conv.rules_used = rules_used(src.graph, rules)
        specs, conv._params = _check(conv)
        info["sha256"] = src.sha256  # hashed meanwhile, in a thread
        conv.state_dict = LazyStateDict(program.state, specs, src.close)
    except BaseException:
        src.close()
        raise
    return conv


def _check(conv: Conversion) -> tuple[dict[str, Spec], dict]:
    """Compile the source, build the module on the meta device and compare
    its state_dict keys with the converted weights' (each weight's shape is
    checked when it is produced).  Returns the shape and dtype of every
    entry, in the module's order, and parameter counts per submodule."""
    try:
        cls = conv.module_class()
    except SyntaxError as exc:  # a bug in a rule, never user input
        raise ConversionError(f"internal error: generated model.py does not "
                              f"compile ({exc})") from exc
    try:
        with torch.device("meta"), _no_meta_init():
            model = cls()
    except Exception as exc:  # torch refuses a value from the config
        msg = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConversionError(f"the model config gives torch invalid "
                              f"layer arguments ({type(exc).__name__}: "
                              f"{msg})") from None
    specs = {k: Spec(v.shape, v.dtype) for k, v in model.state_dict().items()}
    got = conv.program.state
    if specs.keys() != got.keys():
        missing = sorted(set(specs) - set(got))
        extra = sorted(set(got) - set(specs))
        raise ConversionError(
            "internal error: converted weights do not fit the generated "
            f"module (missing {missing}, unexpected {extra})")
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        counts[name.split(".", 1)[0]] = counts.get(
            name.split(".", 1)[0], 0) + p.numel()
    return specs, counts


_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_",
          "zeros_", "eye_", "dirac_", "xavier_uniform_", "xavier_normal_",
          "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")
_init_lock = threading.Lock()
_init_users = 0


@contextlib.contextmanager
def _no_meta_init():
    """Skip ``torch.nn.init`` on meta tensors while the port is built for
    the check: the values are never used, and ``normal_`` on the meta
    device (``nn.Embedding``) imports ``torch._dynamo``, ~4 s.  Other
    tensors, in other threads too, are initialised as usual."""
    global _init_users
    init = torch.nn.init
    with _init_lock:
        if _init_users == 0:
            for name in _INITS:
                real = getattr(init, name, None)
                if real is not None:
                    setattr(init, name, _skip_meta(real))
        _init_users += 1
    try:
        yield
    finally:
        with _init_lock:
            _init_users -= 1
            if _init_users == 0:
                for name in _INITS:
                    fn = getattr(init, name, None)
                    setattr(init, name, getattr(fn, "__wrapped__", fn))


def _skip_meta(real):
    def init(tensor, *args, **kwargs):
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor
        return real(tensor, *args, **kwargs)
    init.__wrapped__ = real
    return init


__all__ = ["Conversion", "convert", "__version__"]
