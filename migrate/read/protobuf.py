"""A small, bounded decoder of the protobuf wire format.

    msg = Message.parse(data, "keras_metadata.pb")
    for node in msg.messages(1):          # repeated sub-message, field 1
        node.int(1), node.text(3), node.bytes(4)

The few protobuf messages keras2torch reads (SavedMetadata,
TrackableObjectGraph, BundleHeaderProto, BundleEntryProto) are decoded from
the wire format here instead of with the ``protobuf`` package: they need
four wire types and a dozen fields, and a schema-less decoder cannot be
steered by the file into generated code paths.  Everything is bounded:

* a message is split into its fields in one flat pass (no recursion: a
  sub-message is decoded only when the caller asks for that field, one
  level per call, so nesting costs nothing until it is used);
* varints are at most 10 bytes, lengths must fit in what is left of the
  buffer (so no length can make us allocate more than the input), and
  group (3, 4) and unknown (6, 7) wire types are refused;
* values are views of the input, not copies.

Every malformed input raises a one-line :class:`ConversionError` naming
``label`` and the byte offset.
"""
from __future__ import annotations

from ..errors import ConversionError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MAX_FIELDS = 1 << 24  # fields in one message; a guard against runaway loops


def varint(buf, pos: int, label: str) -> tuple[int, int]:
    """The varint at ``buf[pos]`` and the position after it."""
    result = shift = 0
    end = len(buf)
    for _ in range(10):
        if pos >= end:
            raise ConversionError(f"{label}: truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    raise ConversionError(f"{label}: varint longer than 10 bytes at byte "
                          f"{pos}")


class Message:
    """The fields of one message: field number -> list of raw values
    (``int`` for varint and fixed fields, ``memoryview`` for
    length-delimited ones), in file order."""

    __slots__ = ("fields", "label")

    def __init__(self, fields: dict, label: str):
        self.fields = fields
        self.label = label

    @classmethod
    def parse(cls, data, label: str) -> "Message":
        buf = memoryview(data).cast("B") if not isinstance(
            data, memoryview) or data.format != "B" else data
        fields: dict[int, list] = {}
        pos, end, count = 0, len(buf), 0
        while pos < end:
            count += 1
            if count > MAX_FIELDS:
                raise ConversionError(f"{label}: more than {MAX_FIELDS} "
                                      "fields in one message")
            start = pos
            key, pos = varint(buf, pos, label)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ConversionError(f"{label}: field number 0 at byte "
                                      f"{start}")
            if wire == VARINT:
                value, pos = varint(buf, pos, label)
            elif wire == LENGTH:
                size, pos = varint(buf, pos, label)
                if size > end - pos:
                    raise ConversionError(
                        f"{label}: field {number} at byte {start} runs "
                        f"{size} bytes past the end of its message")
                value = buf[pos:pos + size]
                pos += size
            elif wire in (FIXED64, FIXED32):
                n = 8 if wire == FIXED64 else 4
                if n > end - pos:
                    raise ConversionError(f"{label}: truncated fixed field "
                                          f"{number} at byte {start}")
                value = int.from_bytes(buf[pos:pos + n], "little")
                pos += n
            else:
                raise ConversionError(f"{label}: unsupported wire type "
                                      f"{wire} at byte {start}")
            fields.setdefault(number, []).append((wire, value))
        return cls(fields, label)

    def _values(self, number: int, wire: int, what: str) -> list:
        out = []
        for w, v in self.fields.get(number, ()):
            if w != wire:
                raise ConversionError(f"{self.label}: field {number} is not "
                                      f"{what}")
            out.append(v)
        return out

    def int(self, number: int, default: int = 0) -> int:
        """A scalar integer field (the last value wins, as in protobuf)."""
        values = self._values(number, VARINT, "an integer")
        return values[-1] if values else default

    def signed(self, number: int, default: int = 0) -> int:
        """An ``int32`` / ``int64`` field (two's complement)."""
        v = self.int(number, default)
        return v - (1 << 64) if v >= 1 << 63 else v

    def fixed32(self, number: int, default: int = 0) -> int:
        values = self._values(number, FIXED32, "a fixed32")
        return values[-1] if values else default

    def bytes(self, number: int, default: bytes = b"") -> bytes:
        values = self._values(number, LENGTH, "length-delimited")
        return bytes(values[-1]) if values else default

    def text(self, number: int, default: str = "") -> str:
        raw = self.bytes(number, None)
        if raw is None:
            return default
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{self.label}: field {number} is not "
                                  "UTF-8 text") from None

    def message(self, number: int) -> "Message | None":
        """A singular sub-message field (``None`` when absent)."""
        values = self._values(number, LENGTH, "a message")
        return Message.parse(values[-1], self.label) if values else None

    def messages(self, number: int) -> list["Message"]:
        """A repeated sub-message field, decoded one level."""
        return [Message.parse(v, self.label)
                for v in self._values(number, LENGTH, "a message")]


__all__ = ["Message", "varint"]
