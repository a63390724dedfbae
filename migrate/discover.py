"""Find the Keras models under some paths.

    for found in discover(["models/", "extra.keras"]):
        found.path, found.weights, found.skip   # skip: why it is not a model

What counts as a model, by content (the extension only picks candidates):

* ``*.keras``: always a candidate (a broken archive is an error later);
* ``*.h5`` / ``*.hdf5``: an HDF5 file with a ``model_config`` attribute.
  A weights-only file is skipped (and not listed at all when it is the
  weights of a JSON config beside it); an unreadable file is still listed,
  so that converting it reports the error;
* ``*.json``: a Keras model config (``model.to_json()``) with a weights file
  beside it, :data:`WEIGHT_NAMES` tried in order.  A config without weights
  is skipped; other JSON (package.json, conversion.json, ...) is ignored
  when found by walking a directory and skipped when named explicitly.

Directories are walked in sorted order, skipping hidden directories,
``__pycache__``, virtual environments and ``node_modules``.  ``exclude``
takes glob patterns matched against the path relative to each root (``*``
crosses ``/``).
"""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".json")
# weights beside "NAME.json", in order
WEIGHT_NAMES = ("{stem}.weights.h5", "{stem}_weights.h5",
                "{stem}.weights.hdf5", "{stem}_weights.hdf5")
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}
_KERAS_CLASSES = {"Sequential", "Functional", "Model"}
_JSON_PEEK = 64 << 20


@dataclass(frozen=True)
class Found:
    path: Path
    weights: Path | None = None
    skip: str | None = None  # set when this is not a model: why

    @property
    def is_model(self) -> bool:
        return self.skip is None


def discover(paths, exclude=()) -> list[Found]:
    """Models (and explicitly named non-models) under ``paths``, sorted by
    path within each argument, each file once.  A path that does not exist
    raises ``FileNotFoundError``."""
    out: list[Found] = []
    seen: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory")
        if root.is_dir():
            found = [f for f in _walk(root, exclude)]
        else:
            found = [_classify(root, explicit=True)]
        for f in found:
            if f is None:
                continue
            key = f.path.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _walk(root: Path, exclude):
    candidates = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg")))
        for name in filenames:
            if name.lower().endswith(MODEL_SUFFIXES):
                candidates.append(Path(dirpath, name))
    candidates.sort()
    paired = set()  # weights files that belong to a JSON config
    results = []
    for path in candidates:
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in exclude):
            continue
        f = _classify(path, explicit=False)
        if f is not None and f.weights is not None:
            paired.add(f.weights.resolve())
        results.append(f)
    return [f for f in results if f is None
            or f.path.resolve() not in paired]


def _classify(path: Path, explicit: bool) -> Found | None:
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return Found(path)
    if suffix in (".h5", ".hdf5"):
        return _classify_h5(path)
    if suffix == ".json":
        return _classify_json(path, explicit)
    if explicit:  # named on the command line: let conversion decide
        return Found(path)
    return None


def _classify_h5(path: Path) -> Found:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            if "model_config" in attrs:
                return Found(path)
            if ("layer_names" in attrs or "layer_names0" in attrs
                    or "layers" in f):
                return Found(path, skip="weights-only HDF5 file (no model "
                                        "config); its JSON config is the "
                                        "model")
            return Found(path, skip="HDF5 file without a Keras model "
                                    "config")
    except OSError:
        return Found(path)  # unreadable: converting it reports why


def _classify_json(path: Path, explicit: bool) -> Found | None:
    try:
        if path.stat().st_size > _JSON_PEEK:
            return Found(path, skip="JSON file too large for a model "
                                    "config") if explicit else None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return Found(path, skip="not valid JSON") if explicit else None
    if not (isinstance(data, dict) and data.get("class_name")
            in _KERAS_CLASSES and isinstance(data.get("config"), dict)):
        return Found(path, skip="JSON, but not a Keras model config") \
            if explicit else None
    stem = path.name[:-len(".json")]
    for pattern in WEIGHT_NAMES:
        w = path.with_name(pattern.format(stem=stem))
        if w.is_file():
            return Found(path, weights=w)
    names = " or ".join(p.format(stem=stem) for p in WEIGHT_NAMES[:2])
    return Found(path, skip=f"Keras model config without weights beside it "
                            f"(expected {names})")


def port_name(path: Path) -> str:
    """The name a model's port takes: the file name without its model
    extension (``small_cnn.keras`` -> ``small_cnn``)."""
    name = path.name
    for suffix in (".keras", ".hdf5", ".h5", ".json"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)] or name
    return path.stem or name


__all__ = ["Found", "MODEL_SUFFIXES", "WEIGHT_NAMES", "discover",
           "port_name"]
