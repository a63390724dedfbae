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

* a directory holding ``saved_model.pb`` (a tf.keras SavedModel, with
  ``keras_metadata.pb`` beside it): one model, its insides not searched;
  one without Keras metadata is listed too, so that converting it says
  why it cannot be read.

Directories are walked in sorted order, skipping hidden directories,
``__pycache__``, virtual environments and ``node_modules``.  ``exclude``
takes glob patterns matched against the path relative to each root (``*``
crosses ``/``).
"""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".json")
# weights beside "NAME.json", in order
WEIGHT_NAMES = ("{stem}.weights.h5", "{stem}_weights.h5",
                "{stem}.weights.hdf5", "{stem}_weights.hdf5")
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}
_KERAS_CLASSES = {"Sequential", "Functional", "Model"}
_JSON_PEEK = 64 << 20
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class Found:
    path: Path
    weights: Path | None = None
    skip: str | None = None  # set when this is not a model: why

    @property
    def is_model(self) -> bool:
        return self.skip is None


@dataclass
class Skipped:
    """What a search passed over without listing it (for the line that
    says where it looked when it found no model)."""

    excluded: int = 0  # files matching an exclude pattern
    ignored: int = 0  # .json files that are not Keras configs
    directories: list[str] = field(default_factory=list)  # not searched


def discover(paths, exclude=(), skipped: Skipped | None = None
             ) -> list[Found]:
    """Models (and explicitly named non-models) under ``paths``, sorted by
    path within each argument, each file once.  A path that does not exist
    raises ``FileNotFoundError``.  ``skipped``, if given, counts what the
    walk passed over without listing it."""
    out: list[Found] = []
    seen: set[Path] = set()
    skipped = Skipped() if skipped is None else skipped
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or directory")
        if root.is_dir() and not is_savedmodel(root):
            found = [f for f in _walk(root, exclude, skipped)]
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


def _walk(root: Path, exclude, skipped: Skipped):
    candidates = []
    for dirpath, dirnames, filenames in os.walk(root):
        keep = sorted(
            d for d in dirnames if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg")))
        skipped.directories += sorted(
            os.path.relpath(os.path.join(dirpath, d), root)
            for d in set(dirnames) - set(keep))
        dirnames[:] = keep
        if SAVED_MODEL_FILE in filenames:  # one model: not searched further
            dirnames[:] = []
            candidates.append(Path(dirpath))
            continue
        for name in filenames:
            if name.lower().endswith(MODEL_SUFFIXES):
                candidates.append(Path(dirpath, name))
    candidates.sort()
    paired = set()  # weights files that belong to a JSON config
    results = []
    for path in candidates:
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in exclude):
            skipped.excluded += 1
            continue
        f = _classify(path, explicit=False)
        if f is None:
            skipped.ignored += 1
        if f is not None and f.weights is not None:
            paired.add(f.weights.resolve())
        results.append(f)
    return [f for f in results if f is None
            or f.path.resolve() not in paired]


def is_savedmodel(path: Path) -> bool:
    """A SavedModel directory: it holds ``saved_model.pb`` (whether it is
    a Keras one, with ``keras_metadata.pb``, conversion says)."""
    return Path(path).is_dir() and (Path(path) / SAVED_MODEL_FILE).is_file()


def _classify(path: Path, explicit: bool) -> Found | None:
    if is_savedmodel(path):
        return Found(path)
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
                return Found(path, skip=_weights_only(path))
            return Found(path, skip="HDF5 file without a Keras model "
                                    "config")
    except OSError:
        return Found(path)  # unreadable: converting it reports why


def _weights_only(path: Path) -> str:
    """Why a weights-only HDF5 file is not a model, and what to convert
    instead: the JSON config beside it it belongs to, if there is one."""
    for pattern in WEIGHT_NAMES:
        head, tail = pattern.split("{stem}")
        name = path.name
        if name.endswith(tail) and len(name) > len(tail):
            config = path.with_name(name[:-len(tail)] + ".json")
            if config.is_file():
                return (f"weights-only HDF5 file, the weights of "
                        f"{config.name} beside it: convert that config")
    return ("weights-only HDF5 file (save_weights), no model config in it "
            "and no JSON config beside it; convert the model's JSON "
            "config (model.to_json()) with this file as its weights, or "
            "a full saved model")


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


def nothing_found(paths, found: list[Found], skipped: Skipped) -> str:
    """The one line for a search that found no model: where it looked,
    what it looked for and what it passed over."""
    where = ", ".join(str(p) for p in paths)
    parts = []
    not_models = [f for f in found if not f.is_model]
    if not_models:
        named = "; ".join(f"{f.path}: {f.skip}" for f in not_models[:3])
        more = (f"; and {len(not_models) - 3} more"
                if len(not_models) > 3 else "")
        parts.append(f"{len(not_models)} not a model ({named}{more})")
    if skipped.ignored:
        parts.append(f"{skipped.ignored} JSON file(s) that are not Keras "
                     "model configs")
    if skipped.excluded:
        parts.append(f"{skipped.excluded} excluded by a pattern")
    if skipped.directories:
        dirs = skipped.directories
        more = f" and {len(dirs) - 3} more" if len(dirs) > 3 else ""
        parts.append(f"{len(dirs)} director{'y' if len(dirs) == 1 else 'ies'}"
                     f" not searched ({', '.join(dirs[:3])}{more}: hidden, "
                     "__pycache__, node_modules or a virtualenv)")
    return (f"no Keras models found in {where} (looked for .keras, "
            ".h5/.hdf5 and .json with weights beside it; "
            + ("skipped: " + "; ".join(parts) if parts else "nothing else "
               "there") + ")")


def port_name(path: Path) -> str:
    """The name a model's port takes: the file name without its model
    extension (``small_cnn.keras`` -> ``small_cnn``)."""
    name = path.name
    if is_savedmodel(path):
        return name
    for suffix in (".keras", ".hdf5", ".h5", ".json"):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)] or name
    return path.stem or name


__all__ = ["Found", "MODEL_SUFFIXES", "Skipped", "WEIGHT_NAMES",
           "discover", "is_savedmodel", "nothing_found", "port_name"]
