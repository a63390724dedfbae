"""Reading a keras-hub constructor config: every number checked before it
sizes anything (the file is untrusted input)."""
from __future__ import annotations

from ...errors import ConversionError
from ...read.config import MAX_DIM

MAX_LAYERS = 4096  # transformer layers of one model


def dim(cfg: dict, key: str, default=None, limit: int = MAX_DIM) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= limit:
        raise ConversionError(f"{key} = {value!r} is not a valid size "
                              f"(integers from 1 to {limit})")
    return value


def layers(cfg: dict, key: str = "num_layers") -> int:
    return dim(cfg, key, limit=MAX_LAYERS)


def rate(cfg: dict, key: str = "dropout", default: float = 0.0) -> float:
    value = cfg.get(key, default)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= value < 1.0:
        raise ConversionError(f"{key} = {value!r} is not a rate in [0, 1)")
    return float(value)


def number(cfg: dict, key: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConversionError(f"{key} = {value!r} is not a number")
    return float(value)


def backbone(cfg: dict) -> dict:
    """A task model's backbone entry (a nested, expandable config)."""
    entry = cfg.get("backbone")
    if not isinstance(entry, dict) or not isinstance(entry.get("config"),
                                                     dict):
        raise ConversionError("its config has no backbone")
    name = entry["config"].get("name")
    if not isinstance(name, str) or not name:
        raise ConversionError("its backbone has no name")
    return entry
