"""An Arrow IPC stream sized before it is decoded: its rows and the bytes its buffers take once decompressed, read
from each message's metadata (`ipc_size`). A body of a few kilobytes of zstd can decompress to gigabytes; the
service refuses it (413) on these figures, before Arrow allocates anything."""

from __future__ import annotations

import struct
from typing import NamedTuple

import pyarrow as pa

_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2  # Message.fbs: union MessageHeader


class IpcSize(NamedTuple):
    rows: int  # rows of the record batches (dictionaries not counted)
    decoded_bytes: int  # every buffer of every batch and dictionary, decompressed


class _Table:
    """A flatbuffer table at `pos` of `buf` (the few accessors Arrow's Message schema needs)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, i: int) -> int:
        slot = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0] if slot < self.vsize else 0

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        off = self._field(i)
        return struct.unpack_from(fmt, self.buf, self.pos + off)[0] if off else default

    def table(self, i: int) -> _Table | None:
        off = self._field(i)
        if not off:
            return None
        at = self.pos + off
        return _Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, i: int, size: int) -> tuple[int, int]:
        """A vector of structs: (position of its first element, count)."""
        off = self._field(i)
        if not off:
            return 0, 0
        at = self.pos + off
        vec = at + struct.unpack_from("<I", self.buf, at)[0]
        return vec + 4, struct.unpack_from("<I", self.buf, vec)[0]


def _batch(batch: _Table, body: memoryview | bytes) -> tuple[int, int]:
    """A RecordBatch table's rows and decoded bytes; a compressed buffer starts with its decompressed length
    (int64, -1: stored as is)."""
    rows = batch.scalar(0, "<q")
    start, count = batch.structs(2, 16)  # buffers: struct Buffer { offset: long; length: long }
    compressed = batch.table(3) is not None  # BodyCompression present
    total = 0
    for k in range(count):
        offset, length = struct.unpack_from("<qq", batch.buf, start + 16 * k)
        if offset < 0 or length < 0 or offset + length > len(body):
            raise ValueError("an Arrow buffer lies outside its message's body")
        if compressed and length >= 8:
            decoded = struct.unpack_from("<q", body, offset)[0]
            total += length - 8 if decoded == -1 else decoded
        else:
            total += length
    return rows, total


def ipc_size(body: bytes) -> IpcSize:
    """The rows and decoded bytes of an Arrow IPC stream, from its messages' metadata (nothing decompressed);
    ValueError if it is not one."""
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body))
        rows = decoded = 0
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            if message.type not in ("record batch", "dictionary"):
                continue
            meta = message.metadata.to_pybytes()
            root = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
            kind = root.scalar(1, "<B")
            header = root.table(2)
            if header is None:
                raise ValueError("an Arrow message without its header")
            view = memoryview(message.body if message.body is not None else b"")
            if kind == _RECORD_BATCH:
                r, d = _batch(header, view)
                rows += r
            elif kind == _DICTIONARY_BATCH:
                data = header.table(1)
                r, d = (0, 0) if data is None else _batch(data, view)
            else:
                continue
            if r < 0 or d < 0:
                raise ValueError("an Arrow batch of negative size")
            decoded += d
    except (pa.ArrowException, OSError, struct.error, IndexError) as error:
        raise ValueError(f"the body is not a valid Arrow IPC stream ({error})") from None
    return IpcSize(rows, decoded)
