"""Models saved as their constructor arguments, expanded into a layer graph.

A keras-hub Backbone or task model (``GPT2Backbone``, ``BertTextClassifier``,
...) is a Functional model that builds its own graph in ``__init__``, so its
saved config holds only the constructor arguments::

    {"class_name": "GPT2Backbone", "registered_name": "keras_hub>GPT2Backbone",
     "config": {"vocabulary_size": 50257, "num_layers": 12, ...}}

An *expander* knows how one such class builds its graph and returns the
Functional config Keras itself would write for it (the same layers, names,
calls and order, so weights are found where the save put them).  Expanders
are registered by the rule pack that knows the library (see
:mod:`migrate.rules.keras_hub`); the library itself is never imported, and
nothing from the file is run: an expander only reads numbers and strings
from the config, checked as any layer config is.
"""
from __future__ import annotations

from typing import Callable

from ..errors import ConversionError

# registered name ("keras_hub>GPT2Backbone") -> expander(config) -> entry
EXPANDERS: dict[str, Callable[[dict], dict]] = {}


def expander(*names: str):
    """Register the decorated ``fn(config) -> Functional entry`` under the
    registered names ``names`` (``"keras_hub>GPT2Backbone"``)."""
    def deco(fn):
        for name in names:
            EXPANDERS[name] = fn
        return fn
    return deco


# registered name -> why that class is not converted (said instead of the
# generic "not supported yet")
REFUSED: dict[str, str] = {}


def refused(*names: str, reason: str) -> None:
    """Refuse the classes ``names`` with ``reason`` (a known variant of a
    supported model, such as a mixture-of-experts one)."""
    for name in names:
        REFUSED[name] = reason


def key_of(entry: dict) -> str | None:
    """The registered name an expander would be found under."""
    registered = entry.get("registered_name")
    cls = entry.get("class_name")
    if isinstance(cls, str) and ">" in cls:  # tf-keras .h5 style
        return cls
    if isinstance(registered, str) and ">" in registered:
        return registered
    module = entry.get("module")
    if isinstance(module, str) and module.startswith("keras_hub") \
            and isinstance(cls, str):
        return f"keras_hub>{cls}"
    return None


def find(entry: dict) -> Callable[[dict], dict] | None:
    key = key_of(entry)
    if key is None:
        return None
    if not EXPANDERS:
        from .. import rules  # noqa: F401  (registers the packs' expanders)
    return EXPANDERS.get(key)


def expand(entry: dict, label: str) -> dict | None:
    """The Functional entry for ``entry``, or None when no expander knows
    its class (a keras-hub class it does not know is refused by name)."""
    fn = find(entry)
    if fn is None:
        key = key_of(entry)
        if key in REFUSED:
            raise ConversionError(f"{label}: keras-hub model "
                                  f"{key.split('>')[1]!r} is not supported: "
                                  f"{REFUSED[key]}")
        if key and key.split(">")[0] in ("keras_hub", "keras_nlp"):
            known = sorted({k.split(">")[1] for k in EXPANDERS})
            raise ConversionError(
                f"{label}: keras-hub model {key.split('>')[1]!r} is not "
                f"supported yet (supported: {', '.join(known)}); a "
                "Functional model of keras-hub layers converts where "
                "`keras2torch rules` lists its layers")
        return None
    cfg = entry.get("config")
    if not isinstance(cfg, dict):
        raise ConversionError(f"{label}: {entry.get('class_name')!r} has no "
                              "config dict")
    try:
        out = fn(cfg)
    except ConversionError as exc:
        raise ConversionError(f"{label}: {entry.get('class_name')}: {exc}") \
            from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(
            f"{label}: {entry.get('class_name')}: its config cannot be read "
            f"({type(exc).__name__}: {exc})") from None
    # the class the port is named after: the table's own spelling of it
    # (the key matched one of ours), never a string read from the file
    return dict(out, expanded_from=key_of(entry).split(">", 1)[1])
