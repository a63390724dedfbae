"""Read a Keras v3 ``.keras`` archive without extracting it.

The archive is a zip with ``config.json``, ``metadata.json`` and
``model.weights.h5`` (spec section 1.3).  The JSON members are read into
memory with a size limit each; nothing is ever extracted to disk, and member
names are only compared, never used as paths.

Keras stores ``model.weights.h5`` uncompressed, so it is read in place: a
:class:`MemberWindow` is a read-only file object over the member's bytes in
the archive, which h5py reads like a file (through a 64 KiB
``io.BufferedReader``), so converting a model never holds its whole weights
file in memory.  A compressed member (an archive re-zipped
by another tool) falls back to an in-memory read, with the size limits.
"""
from __future__ import annotations

import io
import json
import os
import struct
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
    # the model.weights.h5 member: a MemberWindow when stored, else bytes
    weights: "MemberWindow | bytes"


def read_archive(path: str) -> Archive:
    try:
        with zipfile.ZipFile(path) as z:
            members = {info.filename: info for info in z.infolist()}
            _check_names(members, path)
            if CONFIG not in members:
                raise ConversionError(
                    f"{path}: zip file without {CONFIG}, not a Keras "
                    f"model archive (members: {_list(members)})")
            config = _json(z, members[CONFIG], path)
            meta = {}
            if METADATA in members:
                meta = _json(z, members[METADATA], path)
            weights = _weights(z, members, path)
    except (zipfile.BadZipFile, EOFError, ValueError, OverflowError,
            NotImplementedError) as exc:
        raise ConversionError(f"{path}: truncated or corrupt zip archive "
                              f"({first_line(exc)})") from None
    version = meta.get("keras_version", "") if isinstance(meta, dict) else ""
    return Archive(config, str(version or ""), weights)


def _check_names(members: dict, path: str) -> None:
    """Refuse member names that point outside the archive.  Nothing is
    ever extracted, but such a name only comes from a crafted file."""
    for name in members:
        parts = name.replace("\\", "/").split("/")
        if (name.startswith(("/", "\\")) or ".." in parts or "\0" in name
                or (len(name) > 1 and name[1] == ":")):
            raise ConversionError(
                f"{path}: refusing a zip member named {name!r}, which points "
                "outside the archive; Keras never writes such names")


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


def _weights(z, members, path) -> "MemberWindow | bytes":
    if WEIGHTS in members:
        info = members[WEIGHTS]
        if info.compress_type == zipfile.ZIP_STORED:
            return MemberWindow.open(path, info)
        return _read(z, info, WEIGHTS_LIMIT, path)
    if "model.weights.npz" in members:
        raise ConversionError(
            f"{path}: stores its weights as model.weights.npz, which is not "
            "supported yet; re-save with the HDF5 weights store")
    raise ConversionError(f"{path}: archive has no {WEIGHTS} "
                          f"(members: {_list(members)})")


# -- reading a stored member in place ----------------------------------------
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name, extra lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"


class MemberWindow(io.RawIOBase):
    """A read-only, seekable file object over the bytes of one stored
    (uncompressed) zip member, read in place from the archive.

    Positions are relative to the member: ``seek(0)`` is its first byte and
    reads stop at its end.  Reads use ``os.pread`` on a private descriptor,
    so they never move a shared file position.  The member's CRC is not
    checked (that would mean reading it all); the HDF5 reader checks the
    structure it reads.
    """

    def __init__(self, fd: int, start: int, size: int, name: str):
        super().__init__()
        self._fd = fd
        self._start = start
        self._size = size
        self._pos = 0
        self.name = name  # for messages only

    @classmethod
    def open(cls, path: str, info: zipfile.ZipInfo) -> "MemberWindow":
        """The window over ``info`` in the archive at ``path``, after
        checking that the member is stored, not encrypted, and lies inside
        the archive."""
        where = f"{path}: member {info.filename}"
        if info.compress_type != zipfile.ZIP_STORED:
            raise ConversionError(f"{where} is compressed; it cannot be "
                                  "read in place")
        if info.flag_bits & 0x1:
            raise ConversionError(f"{where} is encrypted")
        if info.compress_size != info.file_size:
            raise ConversionError(
                f"{where} is stored but declares {info.file_size} bytes "
                f"for {info.compress_size} stored; the archive is corrupt")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            total = os.fstat(fd).st_size
            head = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
            if len(head) < _LOCAL_HEADER.size:
                raise ConversionError(f"{where}: the archive is truncated")
            sig, name_len, extra_len = _LOCAL_HEADER.unpack(head)
            if sig != _LOCAL_SIGNATURE:
                raise ConversionError(f"{where}: bad local header, the "
                                      "archive is corrupt")
            start = (info.header_offset + _LOCAL_HEADER.size + name_len
                     + extra_len)
            if start + info.file_size > total:
                raise ConversionError(
                    f"{where} declares {info.file_size} bytes but the "
                    f"archive ends {max(total - start, 0)} bytes after its "
                    "start; the archive is truncated or corrupt")
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, start, info.file_size, where)

    # io.RawIOBase interface --------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos  # past the end is allowed; reads there return b""
        return pos

    def readinto(self, buffer) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        done = 0
        while done < n:
            got = os.preadv(self._fd, [view[done:n]],
                            self._start + self._pos + done)
            if got <= 0:
                raise OSError(f"{self.name}: unexpected end of the archive")
            done += got
        self._pos += done
        return done

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
