"""Read a Keras v3 ``.keras`` archive in memory.

The archive is a zip with ``config.json``, ``metadata.json`` and
``model.weights.h5`` (spec section 1.3).  Members are read into memory with a
size limit each; nothing is ever extracted to disk, and member names are only
compared, never used as paths.  The weights member is returned as bytes for
:func:`migrate.read.hdf5.open_hdf5`.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass

from ..errors import ConversionError
from .hdf5 import first_line

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"

MiB = 1 << 20
JSON_LIMIT = 64 * MiB
WEIGHTS_LIMIT = 16 * 1024 * MiB
# A compressed member may not expand more than this (zip bombs); Keras
# stores its members uncompressed anyway.
_MAX_RATIO = 1000


@dataclass
class Archive:
    config: dict
    keras_version: str  # from metadata.json; "" when absent
    weights: bytes  # the model.weights.h5 member


def read_archive(path: str) -> Archive:
    try:
        with zipfile.ZipFile(path) as z:
            members = {info.filename: info for info in z.infolist()}
            if CONFIG not in members:
                raise ConversionError(
                    f"{path}: zip file without {CONFIG}, not a Keras "
                    f"model archive (members: {_list(members)})")
            config = _json(z, members[CONFIG], path)
            meta = {}
            if METADATA in members:
                meta = _json(z, members[METADATA], path)
            weights = _weights(z, members, path)
    except zipfile.BadZipFile as exc:
        raise ConversionError(f"{path}: truncated or corrupt zip archive "
                              f"({first_line(exc)})") from None
    version = meta.get("keras_version", "") if isinstance(meta, dict) else ""
    return Archive(config, str(version or ""), weights)


def _list(members: dict) -> str:
    names = sorted(members)
    more = f", ... {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more if names else "none"


def _read(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int,
          path: str) -> bytes:
    """A member's bytes, refusing sizes over ``limit`` and bomb ratios."""
    where = f"{path}: member {info.filename}"
    if info.file_size > limit:
        raise ConversionError(f"{where} is {info.file_size} bytes, over "
                              f"the {limit // MiB} MiB limit")
    if (info.compress_type != zipfile.ZIP_STORED and info.file_size > MiB
            and info.file_size > _MAX_RATIO * max(info.compress_size, 1)):
        raise ConversionError(f"{where} expands {info.compress_size} bytes "
                              f"to {info.file_size}; refusing a zip bomb")
    try:
        with z.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError,
            NotImplementedError) as exc:
        raise ConversionError(f"{where} cannot be read, the archive is "
                              f"truncated or corrupt ({first_line(exc)})") \
            from None
    if len(data) > limit:
        raise ConversionError(f"{where} is over the {limit // MiB} MiB limit")
    return data


def _json(z, info, path) -> dict:
    data = _read(z, info, JSON_LIMIT, path)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConversionError(f"{path}: member {info.filename} is not valid "
                              f"JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise ConversionError(
            f"{path}: member {info.filename} is not a JSON object")
    return value


def _weights(z, members, path) -> bytes:
    if WEIGHTS in members:
        return _read(z, members[WEIGHTS], WEIGHTS_LIMIT, path)
    if "model.weights.npz" in members:
        raise ConversionError(
            f"{path}: stores its weights as model.weights.npz, which is not "
            "supported yet; re-save with the HDF5 weights store")
    raise ConversionError(f"{path}: archive has no {WEIGHTS} "
                          f"(members: {_list(members)})")
