"""Rule packs installed like plugins (entry-point group ``keras2torch.rules``).

A distribution declares, in ``pyproject.toml``::

    [project.entry-points."keras2torch.rules"]
    my_layers = "my_layers.keras2torch_rules"

(or ``[options.entry_points]`` ``keras2torch.rules = my_layers =
my_layers.keras2torch_rules`` in ``setup.cfg``).  The entry point names a
module whose import registers rules with :func:`migrate.rules.rule` /
:func:`~migrate.rules.activation_rule`, or a callable (``"pkg.mod:register"``)
that registers them or returns them (a ``{key: Rule}`` dict or a list).

Every installed pack is loaded, once per process, the first time a
conversion asks for it; ``plugins=False`` (``--no-plugins``) leaves them
out.  Lookup order: ``--rules`` files, then packs, then keras2torch's own
rules, so a user rule overrides a pack's or a built-in one and a pack may
override a built-in one.  Two packs with a rule for the same key are an
error that names both (and the key): the choice is the user's.
"""
from __future__ import annotations

import threading
from importlib import metadata

from .errors import ConversionError

GROUP = "keras2torch.rules"

__all__ = ["GROUP", "RuleTable", "load_plugins", "pack_names",
           "with_plugins"]

_LOCK = threading.Lock()
_CACHE: dict[tuple, dict] = {}


class RuleTable(dict):
    """The extra rules of one conversion, rule packs already merged in (or
    deliberately left out): passed on unchanged by every stage."""


def _entry_points() -> list:
    eps = metadata.entry_points(group=GROUP)
    return sorted(eps, key=lambda ep: (_dist_name(ep), ep.name, ep.value))


def _dist_name(ep) -> str:
    name = getattr(getattr(ep, "dist", None), "name", None)
    return str(name or f"entry point {ep.name}")


def pack_names() -> list[str]:
    """The distributions that declare a rule pack, sorted (nothing is
    imported)."""
    return sorted({_dist_name(ep) for ep in _entry_points()})


def load_plugins() -> dict:
    """``{key: Rule}`` of every installed rule pack (each rule's ``pack``
    is its distribution's name).  Raises :class:`ConversionError` when a
    pack fails to load or two packs register the same key."""
    merged: dict = {}
    for ep in _entry_points():
        dist = _dist_name(ep)
        for k, r in _load_one(ep, dist).items():
            other = merged.get(k)
            if other is not None and other.pack != dist:
                raise ConversionError(
                    f"rule packs {other.pack} and {dist} both register a "
                    f"rule for {k!r}; uninstall one, or pass --no-plugins "
                    "and give the rule you want with --rules")
            merged[k] = r
    return merged


def _load_one(ep, dist: str) -> dict:
    """The rules one entry point registers, imported once per process."""
    from .userrules import capture
    key = (dist, ep.name, ep.value)
    with _LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = capture(lambda: _run(ep), dist)
            except ConversionError:
                raise
            except Exception as exc:
                raise ConversionError(
                    f"rule pack {dist} (entry point {ep.name} = "
                    f"{ep.value}) failed to load: {type(exc).__name__}: "
                    f"{exc} (convert without rule packs with --no-plugins "
                    "/ plugins=False)") from None
        return _CACHE[key]


def _run(ep):
    obj = ep.load()
    if callable(obj) and not isinstance(obj, type):
        return obj()
    return None  # a module: importing it registered its rules


def with_plugins(rules, plugins: bool = True) -> RuleTable:
    """The extra rules of a conversion: ``rules`` (a ``{key: Rule}`` dict or
    None) over the rule packs' (when ``plugins``).  A :class:`RuleTable`
    is returned as it is (its packs were settled where it was made)."""
    if isinstance(rules, RuleTable):
        return rules
    table = RuleTable(load_plugins() if plugins else {})
    table.update(rules or {})
    return table


def rules_used(graph, rules) -> list[dict]:
    """The rules from outside keras2torch (``--rules`` files, rule packs)
    that ``graph``'s layers and activation functions are converted with:
    ``[{"keras": key, "rule": function name, "source": pack or file}]``,
    for conversion.json (a port made with them needs them to be made
    again)."""
    from .rules import registry
    from .rules.activations import function_name
    used: dict[str, dict] = {}
    for layer in graph.layers():
        found = [registry.lookup(layer, rules)]
        fn = function_name(layer.config.get("activation"))
        if fn is not None:
            found.append((rules or {}).get(registry.activation_key(fn)))
        for r in found:
            if r is not None and r.pack:
                used.setdefault(r.key, {"keras": r.key, "rule": r.name,
                                        "source": _short(r.pack)})
    return sorted(used.values(), key=lambda d: d["keras"])


def _short(source: str) -> str:
    """A rules file's path relative to the current directory when it is
    below it (a pack's name as it is)."""
    import os
    if not source.endswith(".py"):
        return source
    try:
        short = os.path.relpath(source)
    except ValueError:
        return source
    return source if short.startswith("..") else short
