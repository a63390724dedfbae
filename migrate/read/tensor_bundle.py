"""Read a TensorFlow tensor bundle (a checkpoint: ``variables/variables``)
without TensorFlow.

    bundle = TensorBundle.open("m/variables", "variables", label)
    bundle.keys()                      # checkpoint keys, sorted
    arr = bundle.array(key)            # a LazyArray; read() checks its crc
    text = bundle.string(key)          # a scalar string tensor
    bundle.close()

The bundle is ``<prefix>.index`` and ``<prefix>.data-NNNNN-of-MMMMM``.  The
index is a LevelDB-style table (TensorFlow's ``core/lib/io/table``):

* a 48-byte footer: the metaindex and index block handles (varint offset
  and size), padding, and the magic number ``0xdb4775248b80fb57``;
* blocks, each followed by a 5-byte trailer: a type byte (0 raw, 1 Snappy)
  and the masked CRC-32C of the block and its type byte;
* inside a block, entries ``shared, unshared, value_size`` (varints), the
  key's unshared suffix (prefix compression against the previous key) and
  the value; then the restart offsets (uint32 each) and their count;
* the index block maps a separator key to the handle of each data block.

The values are protobufs: under the empty key a ``BundleHeaderProto``
(number of shards, endianness), under every other key a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked crc32c).
Tensors are read lazily, each once, straight into a buffer of their size
(memory is bounded by the largest tensor), and each read checks its
declared size against its shape and its crc32c.  Sliced (partitioned)
variables, big-endian bundles and string tensors other than scalars are
refused.  Every bound is checked before anything is allocated.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import ConversionError
from ..weights import LazyArray
from .crc32c import crc32c, masked
from .protobuf import Message, varint

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5
INDEX_LIMIT = 256 << 20  # bytes of .index read into memory
MAX_RANK = 32
MAX_DIM = 2 ** 31 - 1
MAX_SHARDS = 1 << 16

# DataType enum (tensorflow/core/framework/types.proto) -> numpy
_DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16",
           6: "int8", 9: "int64", 10: "bool", 17: "uint16", 19: "float16",
           22: "uint32", 23: "uint64"}
_DT_STRING = 7
_DT_NAMES = {8: "complex64", 14: "bfloat16", 18: "complex128",
             20: "resource", 21: "variant", 11: "qint8", 12: "quint8",
             13: "qint32", 15: "qint16", 16: "quint16"}


class BundleEntry:
    __slots__ = ("key", "dtype", "shape", "shard", "offset", "size", "crc")

    def __init__(self, key, dtype, shape, shard, offset, size, crc):
        self.key, self.dtype, self.shape = key, dtype, shape
        self.shard, self.offset, self.size, self.crc = (shard, offset, size,
                                                        crc)


class TensorBundle:
    """An opened bundle: the index in memory, the shards opened lazily."""

    def __init__(self, prefix: str, label: str, entries: dict,
                 num_shards: int, inside: str):
        self._prefix = prefix
        self._label = label
        self._entries = entries
        self._num_shards = num_shards
        self._inside = inside
        self._fds: dict[int, tuple[int, int]] = {}  # shard -> (fd, size)

    @classmethod
    def open(cls, prefix: str, label: str, inside: str) -> "TensorBundle":
        """``prefix`` without ``.index``; every file must resolve to a
        regular file under the directory ``inside``."""
        path = prefix + ".index"
        data = _read_small(path, inside, label, INDEX_LIMIT)
        table = read_table(data, f"{label}.index")
        header = table.pop(b"", None)
        if header is None:
            raise ConversionError(f"{label}.index: no bundle header (not a "
                                  "TensorFlow checkpoint index)")
        head = Message.parse(header, f"{label}.index: header")
        num_shards = head.int(1)
        if head.int(2) != 0:
            raise ConversionError(f"{label}.index: a big-endian checkpoint; "
                                  "only little-endian bundles are read")
        if not 1 <= num_shards <= MAX_SHARDS:
            raise ConversionError(f"{label}.index: {num_shards} shards "
                                  f"(expected 1 to {MAX_SHARDS})")
        entries = {}
        for raw_key, value in table.items():
            key = _key_text(raw_key, label)
            entries[key] = _entry(key, value, num_shards, label)
        return cls(prefix, label, entries, num_shards, inside)

    def keys(self) -> list[str]:
        return list(self._entries)

    def entry(self, key: str) -> BundleEntry:
        return self._entries[key]

    def array(self, key: str, where: str = "") -> LazyArray:
        """The numeric tensor under ``key``, read on demand."""
        e = self._entries[key]
        if e.dtype == _DT_STRING:
            raise ConversionError(f"{self._label}: {key!r} is a string "
                                  "tensor, not a weight")
        if e.dtype not in _DTYPES:
            name = _DT_NAMES.get(e.dtype, f"DataType {e.dtype}")
            raise ConversionError(f"{self._label}: {key!r} has dtype {name}, "
                                  "which cannot be converted")
        dtype = np.dtype(_DTYPES[e.dtype])
        expected = math.prod(e.shape) * dtype.itemsize
        if e.size != expected:
            raise ConversionError(
                f"{self._label}: {key!r} declares {e.size} bytes for shape "
                f"{list(e.shape)} of {dtype} ({expected} bytes)")

        def read():
            buf = self._read(e)
            return np.frombuffer(buf, dtype.newbyteorder("<")).reshape(
                e.shape)

        return LazyArray(tuple(e.shape), str(dtype), read, where or key)

    def string(self, key: str) -> bytes:
        """A scalar string tensor (``_CHECKPOINTABLE_OBJECT_GRAPH``)."""
        e = self._entries[key]
        label = f"{self._label}: {key!r}"
        if e.dtype != _DT_STRING or e.shape != ():
            raise ConversionError(f"{label}: not a scalar string tensor")
        buf = memoryview(self._read(e, check=False))
        # [varint length][masked crc32c of the lengths][the bytes]; the
        # crcs run over each length as a little-endian uint32, then over
        # the bytes as written
        n, pos = varint(buf, 0, label)
        if pos + 4 + n != len(buf) or n >= 1 << 32:
            raise ConversionError(f"{label}: string length {n} does not "
                                  f"fit its {len(buf)} bytes")
        crc = crc32c(n.to_bytes(4, "little"))
        want = int.from_bytes(buf[pos:pos + 4], "little")
        if masked(crc) != want:
            raise ConversionError(f"{label}: checksum mismatch in the "
                                  "string length (corrupt checkpoint)")
        crc = crc32c(buf[pos + 4:], crc32c(buf[pos:pos + 4], crc))
        if masked(crc) != e.crc:
            raise ConversionError(f"{label}: crc32c mismatch (corrupt "
                                  "checkpoint data)")
        return bytes(buf[pos + 4:])

    def _read(self, e: BundleEntry, check: bool = True) -> bytearray:
        fd, size = self._shard(e.shard)
        label = f"{self._label}: {e.key!r}"
        if e.offset + e.size > size:
            raise ConversionError(
                f"{label}: bytes {e.offset}..{e.offset + e.size} lie past "
                f"the end of shard {e.shard} ({size} bytes; truncated "
                "checkpoint?)")
        buf = bytearray(e.size)
        got = os.preadv(fd, [buf], e.offset) if e.size else 0
        if got != e.size:
            raise ConversionError(f"{label}: short read from shard "
                                  f"{e.shard}")
        if check and masked(crc32c(buf)) != e.crc:
            raise ConversionError(f"{label}: crc32c mismatch (corrupt "
                                  "checkpoint data)")
        return buf

    def _shard(self, shard: int) -> tuple[int, int]:
        if shard not in self._fds:
            path = (f"{self._prefix}.data-{shard:05d}-of-"
                    f"{self._num_shards:05d}")
            name = os.path.basename(path)
            checked = safe_file(path, self._inside, f"{self._label}: {name}")
            try:
                fd = os.open(checked, os.O_RDONLY)
            except OSError as exc:
                raise ConversionError(f"{self._label}: cannot open {name} "
                                      f"({exc.strerror})") from None
            self._fds[shard] = (fd, os.fstat(fd).st_size)
        return self._fds[shard]

    def close(self) -> None:
        while self._fds:
            _, (fd, _) = self._fds.popitem()
            os.close(fd)


def safe_file(path: str, inside: str, label: str) -> str:
    """``path`` resolved, if it is a regular file under ``inside`` (also
    resolved): a symlink that leaves the directory is refused."""
    real = os.path.realpath(path)
    root = os.path.realpath(inside)
    if os.path.commonpath([real, root]) != root:
        raise ConversionError(f"{label}: leaves the model directory "
                              "(a symlink to elsewhere)")
    if not os.path.exists(real):
        raise ConversionError(f"{label}: missing")
    if not os.path.isfile(real):
        raise ConversionError(f"{label}: not a regular file")
    return real


def _read_small(path: str, inside: str, label: str, limit: int) -> bytes:
    real = safe_file(path, inside, f"{label}.index")
    size = os.path.getsize(real)
    if size > limit:
        raise ConversionError(f"{label}.index: over the {limit >> 20} MiB "
                              "limit for a checkpoint index")
    with open(real, "rb") as f:
        return f.read()


def _key_text(raw: bytes, label: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConversionError(f"{label}.index: a key that is not UTF-8 "
                              f"({raw[:40]!r})") from None


def _entry(key: str, value: bytes, num_shards: int, label: str):
    where = f"{label}.index: entry {key!r}"
    msg = Message.parse(value, where)
    if msg.fields.get(7):
        raise ConversionError(f"{where}: a sliced (partitioned) variable, "
                              "which is not supported")
    shape = _shape(msg.message(2), where)
    shard = msg.signed(3)
    offset, size = msg.signed(4), msg.signed(5)
    if not 0 <= shard < num_shards:
        raise ConversionError(f"{where}: shard {shard} of {num_shards}")
    if offset < 0 or size < 0:
        raise ConversionError(f"{where}: negative offset or size")
    return BundleEntry(key, msg.int(1), shape, shard, offset, size,
                       msg.fixed32(6))


def _shape(msg: Message | None, where: str) -> tuple:
    if msg is None:
        return ()
    if msg.int(3):
        raise ConversionError(f"{where}: a shape of unknown rank")
    dims = msg.messages(2)
    if len(dims) > MAX_RANK:
        raise ConversionError(f"{where}: rank {len(dims)} (at most "
                              f"{MAX_RANK})")
    shape = tuple(d.signed(1) for d in dims)
    if any(not 0 <= d <= MAX_DIM for d in shape):
        raise ConversionError(f"{where}: absurd shape {list(shape)}")
    return shape


# -- the table (SSTable) -----------------------------------------------------
def read_table(data: bytes, label: str) -> dict[bytes, bytes]:
    """Every key and value of a LevelDB-style table, keys in order."""
    buf = memoryview(data)
    if len(buf) < _FOOTER:
        raise ConversionError(f"{label}: {len(buf)} bytes, too short for a "
                              "table footer (truncated?)")
    footer = buf[len(buf) - _FOOTER:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise ConversionError(f"{label}: bad magic number (not a "
                              "TensorFlow checkpoint index, or truncated)")
    _, pos = _handle(footer, 0, label)  # metaindex: unused
    index = _handle(footer, pos, label)[0]
    out: dict[bytes, bytes] = {}
    last = None
    for sep, handle in _block_entries(_block(buf, index, label), label):
        block = _handle(memoryview(handle), 0, label)[0]
        for key, value in _block_entries(_block(buf, block, label), label):
            if last is not None and key <= last:
                raise ConversionError(f"{label}: keys out of order or "
                                      f"repeated at {key[:60]!r}")
            last = key
            out[key] = value
    return out


def _handle(buf, pos: int, label: str) -> tuple[tuple[int, int], int]:
    offset, pos = varint(buf, pos, label)
    size, pos = varint(buf, pos, label)
    return (offset, size), pos


def _block(buf: memoryview, handle: tuple[int, int], label: str) -> bytes:
    offset, size = handle
    end = len(buf) - _FOOTER
    if offset + size + _TRAILER > end:
        raise ConversionError(f"{label}: block at {offset} (+{size}) runs "
                              "past the end of the file (truncated?)")
    contents = buf[offset:offset + size + 1]  # with its type byte
    want = int.from_bytes(buf[offset + size + 1:offset + size + 5], "little")
    if masked(crc32c(contents)) != want:
        raise ConversionError(f"{label}: block at {offset}: checksum "
                              "mismatch (corrupt index)")
    kind = contents[-1]
    if kind == 0:
        return bytes(contents[:-1])
    if kind == 1:
        return snappy_decompress(contents[:-1], INDEX_LIMIT, label)
    raise ConversionError(f"{label}: block at {offset}: unknown compression "
                          f"type {kind}")


def _block_entries(block: bytes, label: str):
    """(key, value) of every entry of a block."""
    buf = memoryview(block)
    if len(buf) < 4:
        raise ConversionError(f"{label}: block of {len(buf)} bytes")
    restarts = int.from_bytes(buf[-4:], "little")
    limit = len(buf) - 4 - 4 * restarts
    if restarts < 1 or limit < 0:
        raise ConversionError(f"{label}: bad restart count {restarts}")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = varint(buf, pos, label)
        unshared, pos = varint(buf, pos, label)
        size, pos = varint(buf, pos, label)
        if shared > len(key) or pos + unshared + size > limit:
            raise ConversionError(f"{label}: corrupt block entry at byte "
                                  f"{pos}")
        key = key[:shared] + bytes(buf[pos:pos + unshared])
        pos += unshared
        yield key, bytes(buf[pos:pos + size])
        pos += size


def snappy_decompress(data, limit: int, label: str) -> bytes:
    """Raw Snappy (the block format LevelDB tables use), bounded by the
    declared length and ``limit``."""
    buf = memoryview(data)
    n, pos = varint(buf, 0, label)
    if n > limit:
        raise ConversionError(f"{label}: Snappy block declares {n} bytes, "
                              f"over the {limit >> 20} MiB limit")
    out = bytearray()
    end = len(buf)
    while pos < end:
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > end:
                    break
                length = int.from_bytes(buf[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > end or len(out) + length > n:
                raise ConversionError(f"{label}: corrupt Snappy literal")
            out += buf[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            if pos + 1 > end:
                break
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            size = 2 if kind == 2 else 4
            if pos + size > end:
                break
            length = 1 + (tag >> 2)
            offset = int.from_bytes(buf[pos:pos + size], "little")
            pos += size
        if not 0 < offset <= len(out) or len(out) + length > n:
            raise ConversionError(f"{label}: corrupt Snappy copy")
        start = len(out) - offset
        for i in range(length):  # may overlap its own output
            out.append(out[start + i])
    if pos != end or len(out) != n:
        raise ConversionError(f"{label}: truncated Snappy block")
    return bytes(out)


__all__ = ["BundleEntry", "TensorBundle", "read_table", "safe_file",
           "snappy_decompress"]
