"""The ``conversion.json`` report: what was converted, how, and how well."""
from __future__ import annotations

from . import __version__


def _port(t) -> dict:
    return {"name": t.name, "keras_shape": list(t.keras_shape),
            "torch_shape": list(t.torch_shape), "dtype": t.dtype,
            "permutation": list(t.layout.perm)}


def build_report(conv) -> dict:
    p = conv.program
    from .api import WEIGHT_FILES
    layers = [{"keras_name": t.name, "class_name": "InputLayer",
               "rule": "input", "torch_name": t.var, "params": 0}
              for t in p.inputs]
    for rec in p.layers:
        layers.append({
            "keras_name": rec.keras_name, "class_name": rec.class_name,
            "rule": rec.rule, "torch_name": rec.torch_name,
            "params": rec.params})
    return {
        "tool": {"name": "keras2torch", "version": __version__},
        "source": dict(conv.source_info),
        "module": {"file": "model.py", "class_name": p.class_name,
                   "weights_file": WEIGHT_FILES[conv.weights_format]},
        "layout": p.layout,
        "inputs": [_port(t) for t in p.inputs],
        "outputs": [_port(t) for t in p.outputs],
        "layers": layers,
        # rules from --rules files and rule packs the port was made with
        "rules": list(getattr(conv, "rules_used", [])),
        "permutes": list(p.permutes),
        "weights": conv.weight_map(),
        "warnings": list(p.warnings) + _training_warnings(conv),
        # training.py and optimizer.safetensors (null: not compiled)
        "training": _training(conv),
        "parity": conv.parity,
    }


def _training(conv):
    port = getattr(conv, "training", None)
    if port is None:
        return None
    info = dict(port.info)
    info["file"] = "training.py" if port.source else None
    return info


def _training_warnings(conv) -> list:
    port = getattr(conv, "training", None)
    return list(port.warnings) if port is not None else []
