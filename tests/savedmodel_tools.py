"""Writers for the pieces of a SavedModel, to craft hostile variants of the
committed fixtures (the readers are in migrate/read; these are their exact
inverses, kept minimal): protobuf fields, a LevelDB-style table, bundle
entries, and rewriting a fixture's index, metadata or object graph."""
import shutil
import struct

from migrate.read.crc32c import crc32c, masked
from migrate.read.protobuf import Message
from migrate.read.tensor_bundle import read_table

MAGIC = 0xDB4775248B80FB57


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value) -> bytes:
    """One field: ``int`` as a varint, ``bytes``/``str`` length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def entry(dtype, shape, shard, offset, size, crc) -> bytes:
    """A BundleEntryProto."""
    dims = b"".join(field(2, field(1, d)) for d in shape)
    return (field(1, dtype) + (field(2, dims) if shape else b"")
            + field(3, shard) + field(4, offset) + field(5, size)
            + fixed32(6, crc))


def decode_entry(value: bytes) -> dict:
    m = Message.parse(value, "entry")
    shape = m.message(2)
    dims = [d.signed(1) for d in shape.messages(2)] if shape else []
    return {"dtype": m.int(1), "shape": dims, "shard": m.signed(3),
            "offset": m.signed(4), "size": m.signed(5),
            "crc": m.fixed32(6)}


def _block(items, compress=None) -> bytes:
    body = bytearray()
    restarts = []
    for key, value in items:  # a restart at every entry: no shared prefix
        restarts.append(len(body))
        body += varint(0) + varint(len(key)) + varint(len(value)) + key
        body += value
    for r in restarts or [0]:
        body += struct.pack("<I", r)
    body += struct.pack("<I", len(restarts) or 1)
    kind = 0
    if compress == "snappy":
        body, kind = snappy_literal(bytes(body)), 1
    return bytes(body), kind


def snappy_literal(data: bytes) -> bytes:
    """Valid Snappy: 4-byte runs seen before become copies (2-byte
    offsets), everything else one-byte literals."""
    out = bytearray(varint(len(data)))
    i = 0
    while i < len(data):
        pos = data.rfind(data[i:i + 4], max(0, i - 65535), i + 3) \
            if i + 4 <= len(data) else -1
        if 0 <= pos < i and pos + 4 <= i + 4:
            out.append(0b10 | (3 << 2))  # copy of 4 bytes
            out += struct.pack("<H", i - pos)
            i += 4
        else:
            out.append(0)  # a literal of 1 byte
            out.append(data[i])
            i += 1
    return bytes(out)


def write_table(items: dict, compress=None, blocks: int = 2) -> bytes:
    """A table of ``items`` (bytes -> bytes, written in key order) split
    over ``blocks`` data blocks, with an index block and the footer."""
    keys = sorted(items)
    out = bytearray()
    index = []
    per = max(1, -(-len(keys) // blocks))
    for i in range(0, len(keys), per):
        chunk = [(k, items[k]) for k in keys[i:i + per]]
        body, kind = _block(chunk, compress)
        handle = varint(len(out)) + varint(len(body))
        out += body + bytes([kind]) + struct.pack(
            "<I", masked(crc32c(body + bytes([kind]))))
        index.append((chunk[-1][0], handle))
    meta_body, _ = _block([])
    meta = varint(len(out)) + varint(len(meta_body))
    out += meta_body + b"\0" + struct.pack(
        "<I", masked(crc32c(meta_body + b"\0")))
    idx_body, _ = _block(index)
    idx = varint(len(out)) + varint(len(idx_body))
    out += idx_body + b"\0" + struct.pack(
        "<I", masked(crc32c(idx_body + b"\0")))
    footer = (meta + idx).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    return bytes(out + footer)


def copy_savedmodel(case_dir, dst):
    shutil.copytree(case_dir / "savedmodel", dst)
    return dst


def index_items(sm) -> dict:
    return read_table((sm / "variables/variables.index").read_bytes(), "x")


def write_index(sm, items: dict, **kw) -> None:
    (sm / "variables/variables.index").write_bytes(write_table(items, **kw))


def variable_keys(sm) -> list[str]:
    return [k.decode() for k in index_items(sm)
            if k and k != b"_CHECKPOINTABLE_OBJECT_GRAPH"]


def encode(fields: dict) -> bytes:
    """A :class:`migrate.read.protobuf.Message`'s fields, written back."""
    out = bytearray()
    for number, values in fields.items():
        for wire, value in values:
            out += varint(number << 3 | wire)
            if wire == 0:
                out += varint(value)
            elif wire == 2:
                out += varint(len(value)) + bytes(value)
            else:
                out += int(value).to_bytes(8 if wire == 1 else 4, "little")
    return bytes(out)


def as_before_tf_2_5(sm) -> None:
    """Move keras_metadata.pb into saved_model.pb's object graph, where
    TF < 2.5 kept it (``SavedUserObject.metadata``)."""
    meta = {n.int(2): n.bytes(5) for n in Message.parse(
        (sm / "keras_metadata.pb").read_bytes(), "m").messages(1)}
    model = Message.parse((sm / "saved_model.pb").read_bytes(), "s")
    graph = Message.parse(model.fields[2][0][1], "s")
    objects = Message.parse(graph.fields[7][0][1], "s")
    nodes = []
    for i, (wire, raw) in enumerate(objects.fields[1]):
        node = Message.parse(raw, "s")
        if i in meta and 4 in node.fields:
            user = Message.parse(node.fields[4][0][1], "s")
            user.fields[3] = [(2, meta[i])]
            node.fields[4] = [(2, encode(user.fields))]
        nodes.append((2, encode(node.fields)))
    objects.fields[1] = nodes
    graph.fields[7] = [(2, encode(objects.fields))]
    model.fields[2] = [(2, encode(graph.fields))] + model.fields[2][1:]
    (sm / "saved_model.pb").write_bytes(encode(model.fields))
    (sm / "keras_metadata.pb").unlink()
