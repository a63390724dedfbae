"""CRC-32C (Castagnoli), as TensorFlow checksums tensor bundles and tables.

    crc32c(b"123456789") == 0xE3069283
    masked(crc)          # TF/LevelDB store crcs "masked"

Small inputs go through a byte table; large ones through numpy in many
lanes at once (each lane a contiguous stretch of about
:data:`_LANE_BYTES` bytes, all stepped together one byte per numpy
operation), then the lane crcs are
joined pairwise in a tree with the GF(2) "append n zero bytes" operator.
That runs at a few hundred MB/s without a compiled extension (a plain
Python byte loop manages about 5 MB/s), so checking every tensor of a
100 MB checkpoint costs well under a second.
"""
from __future__ import annotations

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_SMALL = 1 << 14  # below this, the plain table loop
_LANE_BYTES = 512  # bytes per lane, about: lanes grow with the data


def _make_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def masked(crc: int) -> int:
    """The masked form TF stores (``crc32c::Mask``)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) \
        & 0xFFFFFFFF


def crc32c(data, crc: int = 0) -> int:
    """The CRC-32C of ``data`` (bytes-like), continuing ``crc``."""
    view = memoryview(data).cast("B")
    if len(view) < _SMALL:
        return _extend_small(crc, view)
    arr = np.frombuffer(view, np.uint8)
    lanes = 1 << max(0, (len(arr) // _LANE_BYTES).bit_length() - 1)
    lane = len(arr) // lanes // 4 * 4
    head = arr[:lane * lanes]
    # raw register state (no pre/post inversion) of every lane from 0,
    # then joined: crc(A+B) = shift(crc(A), len(B)) ^ crc(B) for the raw
    # register; the initial value enters as one more shifted term
    state = _lanes_raw(head.reshape(lanes, lane))
    count = lane
    while len(state) > 1:
        state = _shift(state[0::2], count) ^ state[1::2]
        count *= 2
    raw = int(state[0]) ^ int(_shift(np.array([crc ^ 0xFFFFFFFF],
                                              np.uint32), len(head))[0])
    return _extend_small(raw ^ 0xFFFFFFFF, view[len(head):])


def _extend_small(crc: int, view) -> int:
    table = _TABLE_LIST
    c = crc ^ 0xFFFFFFFF
    for b in bytes(view):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _lanes_raw(block: np.ndarray) -> np.ndarray:
    """Raw register (start 0, no final xor) of each row of ``block``
    (rows a multiple of 4 bytes long), 4 bytes a step: two lookups in
    16-bit tables (slicing-by-4, paired)."""
    words = np.ascontiguousarray(block.view("<u4").T)  # (steps, lanes)
    low, high = _tables16()
    c = np.zeros(block.shape[0], np.uint32)
    for w in words:
        c ^= w
        c = low[c & 0xFFFF] ^ high[c >> 16]
    return c


_TABLES16: list = []


def _tables16() -> tuple[np.ndarray, np.ndarray]:
    """For a 32-bit register ``c`` just xored with 4 data bytes, the next
    register is ``low[c & 0xFFFF] ^ high[c >> 16]``."""
    if not _TABLES16:
        t = [_TABLE]
        for _ in range(3):  # t[k][i]: byte i followed by k zero bytes
            prev = t[-1]
            t.append(_TABLE[prev & 0xFF] ^ (prev >> 8))
        # bytes b0 b1 (low half) are followed by 3 and 2 more bytes,
        # b2 b3 (high half) by 1 and 0
        low = (t[2][:, None] ^ t[3][None, :]).ravel()  # index b0 + 256 b1
        high = (t[0][:, None] ^ t[1][None, :]).ravel()  # index b2 + 256 b3
        _TABLES16.extend([low.astype(np.uint32), high.astype(np.uint32)])
    return _TABLES16[0], _TABLES16[1]


_ZERO_OPS: dict[int, np.ndarray] = {}


def _shift(values: np.ndarray, nbytes: int) -> np.ndarray:
    """The raw registers ``values`` after ``nbytes`` zero bytes."""
    return _apply(_zeros_operator(nbytes), values)


def _zeros_operator(nbytes: int) -> np.ndarray:
    op = _ZERO_OPS.get(nbytes)
    if op is None:
        if nbytes == 1:
            op = np.array([_one_zero_byte(1 << b) for b in range(32)],
                          np.uint32)
        else:
            half = _zeros_operator(nbytes // 2)
            op = _compose(half, half)
            if nbytes % 2:
                op = _compose(op, _zeros_operator(1))
        _ZERO_OPS[nbytes] = op
    return op


def _one_zero_byte(reg: int) -> int:
    return _TABLE_LIST[reg & 0xFF] ^ (reg >> 8)


def _compose(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """The operator ``then(first(x))``."""
    return _apply(then, first)


def _apply(op: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``op`` (``op[bit]`` = the image of register bit ``bit``) applied
    to every value."""
    out = np.zeros_like(values)
    for bit in range(32):
        out ^= np.where((values >> np.uint32(bit)) & np.uint32(1),
                        op[bit], np.uint32(0)).astype(np.uint32)
    return out


__all__ = ["crc32c", "masked"]
