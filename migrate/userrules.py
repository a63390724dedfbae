"""Custom rules from the user's own Python files (``--rules FILE.py``).

    rules = load_rule_files(["my_rules.py"])   # {key: Rule}
    migrate.convert("model.keras", rules=rules)

A rules file is the user's code, imported like any module of theirs (model
files are still never executed).  It registers rules the usual way::

    from migrate.rules import Emit, Out, chain, rule

    @rule("MyScale")
    def my_scale(call): ...

Whatever a file registers (new keys, or built-in keys replaced with
``override=True``) is taken out of the global table again and returned as
the ``rules=`` dict, so one conversion's custom rules never leak into
another's.  Files are loaded once per process (keyed by path, size and
modification time), so a batch worker that converts many models imports
each file once.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading

from .errors import ConversionError

__all__ = ["capture", "load_rule_files", "resolve_rules"]

_LOCK = threading.RLock()  # held while the global table is borrowed
_CACHE: dict[tuple, dict] = {}


def load_rule_files(paths) -> dict:
    """The rules registered by each file of ``paths``, merged in order (a
    later file's rule for the same key wins).  Raises
    :class:`ConversionError` for a missing file, one that fails to import,
    or one that registers no rule."""
    merged: dict = {}
    for path in paths:
        merged.update(_load(os.path.abspath(os.fspath(path))))
    return merged


def resolve_rules(rules):
    """``rules`` as :func:`migrate.convert` takes it: a ``{key: Rule}``
    dict (returned as is), None, or a list of rules files (loaded)."""
    if rules is None or isinstance(rules, dict):
        return rules
    if isinstance(rules, (str, os.PathLike)):
        rules = [rules]
    return load_rule_files(rules)


def _load(path: str) -> dict:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConversionError(f"rules file {path}: {exc.strerror or exc}") \
            from None
    key = (path, st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _import(path)
        return dict(_CACHE[key])


def _import(path: str) -> dict:
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    name = f"keras2torch_user_rules_{digest}"

    def run():
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConversionError(f"rules file {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        module.__keras2torch_rules_file__ = path  # for `keras2torch rules`
        sys.modules[name] = module  # dataclasses and pickling look here
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, (ConversionError, KeyboardInterrupt)):
                raise
            raise ConversionError(
                f"rules file {path} failed to load: "
                f"{type(exc).__name__}: {exc}") from None

    added = capture(run, path)
    if not added:
        raise ConversionError(
            f"rules file {path} registers no rule (decorate a function "
            "with migrate.rules.rule(\"KerasClassName\"))")
    return added


def capture(load, pack: str) -> dict:
    """Run ``load()`` (which registers rules in the global table) and
    return what it registered, each rule marked as coming from ``pack``;
    the global table is left as it was.  A ``{key: Rule}`` dict or a list
    of rules that ``load`` returns counts as registered too."""
    from dataclasses import replace

    from .rules.registry import RULES, Rule
    with _LOCK:
        before = dict(RULES)
        try:
            value = load()
            added = {k: r for k, r in RULES.items() if before.get(k) is not r}
        finally:
            RULES.clear()
            RULES.update(before)
    if isinstance(value, dict):
        added.update(value)
    elif isinstance(value, (list, tuple)):
        added.update({r.key: r for r in value if isinstance(r, Rule)})
    return {k: replace(r, key=k, pack=pack) for k, r in added.items()}
