"""A TF1 checkpoint's `.index` file, read without TensorFlow.

A TF1 (V2-format) checkpoint `PREFIX` is `PREFIX.index` plus `PREFIX.data-SSSSS-of-NNNNN`
shards. The index is a sorted string table in LevelDB's table layout:

    data blocks | meta-index block | index block | footer (48 bytes)

- footer: two block handles (meta-index, index; each offset and size as varints), zero padding
  to 40 bytes, then the 8-byte magic number 0xdb4775248b80fb57 (little-endian).
- a block: entries `shared key length, unshared key length, value length` (varints), the
  unshared key bytes and the value; then an array of uint32 restart offsets and their count.
  Every block is followed by a 5-byte trailer: a compression byte (0 none, 1 snappy) and the
  masked CRC32C of block + compression byte.
- the index block maps the last key of each data block to that block's handle.
- in the data blocks, the key "" holds a BundleHeaderProto (num_shards, endianness, version)
  and every other key is a tensor name whose value is a BundleEntryProto (dtype, shape,
  shard_id, offset, size, crc32c of the tensor's bytes, slices).

Those two messages are read here with a small protobuf wire-format decoder: reading the names,
dtypes and shapes of a checkpoint needs neither TensorFlow nor its data files, which is what
`import-tfod --check` and the landing watcher rely on. `required_shard_sizes` says how long
each data shard must be: the end of the last tensor the index places in it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from include.errors import CheckpointError

MAGIC = 0xdb4775248b80fb57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_NO_COMPRESSION, _SNAPPY = 0, 1

# tensorflow/core/framework/types.proto: DataType -> numpy-style name
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
          7: "string", 8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8",
          13: "qint32", 14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16",
          18: "complex128", 19: "float16", 20: "resource", 21: "variant", 22: "uint32",
          23: "uint64"}

_FIX = ("copy the checkpoint again from where it was trained: model.ckpt-N.index together "
        "with every model.ckpt-N.data-* shard.")


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str                   # "float32", "int64", ...
    shape: tuple                 # () for a scalar
    shard: int
    offset: int
    size: int                    # bytes in the data shard
    crc32c: int                  # masked CRC32C of the tensor's bytes
    sliced: bool = False         # saved as slices of a partitioned variable

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass(frozen=True)
class CheckpointIndex:
    path: str                    # the .index file
    num_shards: int
    big_endian: bool
    entries: dict                # name -> TensorEntry, sorted by name

    def required_shard_sizes(self) -> dict:
        """{shard: the byte where the last tensor stored in it ends}; every shard appears."""
        sizes = {i: 0 for i in range(self.num_shards)}
        for e in self.entries.values():
            sizes[e.shard] = max(sizes.get(e.shard, 0), e.offset + e.size)
        return sizes


def data_file_name(prefix_name: str, shard: int, num_shards: int) -> str:
    return f"{prefix_name}.data-{shard:05d}-of-{num_shards:05d}"


def prefix_of(path) -> str:
    """`model.ckpt-50000`, `model.ckpt-50000.index` or a data shard -> the prefix path."""
    text = str(path)
    if text.endswith(".index"):
        return text[:-len(".index")]
    head, sep, tail = text.rpartition(".data-")
    if sep and "-of-" in tail:
        return head
    return text


def read_index(path) -> CheckpointIndex:
    """Read `PREFIX.index` (or PREFIX); CheckpointError naming the file when it is not one."""
    path = Path(prefix_of(path) + ".index")
    if not path.is_file():
        raise CheckpointError("the checkpoint's .index file does not exist.", where=str(path),
                              fix="pass the checkpoint prefix (e.g. training/model.ckpt-50000, "
                                  "without .index) of a TF1 checkpoint: " + _FIX)
    return parse_index(path.read_bytes(), str(path))


def parse_index(data: bytes, where: str = "checkpoint.index") -> CheckpointIndex:
    """The index file's bytes -> CheckpointIndex."""
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise CheckpointError(
            f"not a TF1 checkpoint index ({len(data)} bytes, no table footer): the file is "
            "truncated or is something else.", where=where, fix=_FIX)
    footer = data[-FOOTER_SIZE:]
    _, pos = _handle(footer, 0, where)              # meta-index block (unused)
    index_handle, _ = _handle(footer, pos, where)
    header = None
    entries = {}
    for _, value in _block_entries(_read_block(data, index_handle, where), where):
        handle, _ = _handle(value, 0, where)
        for key, val in _block_entries(_read_block(data, handle, where), where):
            if key == b"":
                header = _parse_header(val, where)
                continue
            name = key.decode("utf-8", "replace")
            entries[name] = _parse_entry(name, val, where)
    if header is None:
        raise CheckpointError("the index has no bundle header (the empty key): it is not a "
                              "TF1 checkpoint index.", where=where, fix=_FIX)
    num_shards, big_endian = header
    for e in entries.values():
        if not 0 <= e.shard < num_shards:
            raise CheckpointError(f"tensor {e.name!r} is placed in shard {e.shard}, but the "
                                  f"header says there are {num_shards}.", where=where, fix=_FIX)
    return CheckpointIndex(where, num_shards, big_endian, dict(sorted(entries.items())))


# ---------------------------------------------------------------- table blocks
def _handle(buf: bytes, pos: int, where: str):
    offset, pos = _varint(buf, pos, where)
    size, pos = _varint(buf, pos, where)
    return (offset, size), pos


def _read_block(data: bytes, handle, where: str) -> bytes:
    offset, size = handle
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointError(f"a block at byte {offset} ({size} bytes) runs past the end of "
                              f"the file ({len(data)} bytes): the index is truncated.",
                              where=where, fix=_FIX)
    block, kind = data[offset:end], data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if _unmask(stored) != crc32c(data[offset:end + 1]):
        raise CheckpointError(f"the block at byte {offset} fails its CRC32C check: the index "
                              "file is corrupt.", where=where, fix=_FIX)
    if kind == _NO_COMPRESSION:
        return block
    if kind == _SNAPPY:
        return snappy_decompress(block, where)
    raise CheckpointError(f"the block at byte {offset} uses compression type {kind}, which a "
                          "TF1 checkpoint index does not use.", where=where, fix=_FIX)


def _block_entries(block: bytes, where: str):
    if len(block) < 4:
        raise CheckpointError("an index block is shorter than its restart count.",
                              where=where, fix=_FIX)
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise CheckpointError("an index block has a bad restart array.", where=where, fix=_FIX)
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        length, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + length > limit:
            raise CheckpointError("an index block entry runs past its block.", where=where,
                                  fix=_FIX)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


# ---------------------------------------------------------------- protobuf wire format
def _varint(buf: bytes, pos: int, where: str):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("a varint runs past the end of its field: the index is "
                                  "truncated or corrupt.", where=where, fix=_FIX)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("a varint is longer than 10 bytes: the index is corrupt.",
                                  where=where, fix=_FIX)


def _fields(buf: bytes, where: str):
    """Yield (field number, wire type, value) of a serialized message."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CheckpointError(f"protobuf wire type {wire} in an index entry: the index is "
                                  "corrupt.", where=where, fix=_FIX)
        if pos > len(buf):
            raise CheckpointError("a protobuf field runs past its message: the index is "
                                  "corrupt.", where=where, fix=_FIX)
        yield number, wire, value


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_header(buf: bytes, where: str):
    num_shards, big_endian = 1, False
    for number, wire, value in _fields(buf, where):
        if number == 1 and wire == 0:
            num_shards = _int64(value)
        elif number == 2 and wire == 0:
            big_endian = value == 1
    if num_shards < 1:
        raise CheckpointError(f"the bundle header says {num_shards} data shards.",
                              where=where, fix=_FIX)
    return num_shards, big_endian


def _parse_shape(buf: bytes, where: str) -> tuple:
    dims = []
    for number, wire, value in _fields(buf, where):
        if number == 2 and wire == 2:                       # TensorShapeProto.Dim
            size = 0
            for n2, w2, v2 in _fields(value, where):
                if n2 == 1 and w2 == 0:
                    size = _int64(v2)
            dims.append(size)
    return tuple(dims)


def _parse_entry(name: str, buf: bytes, where: str) -> TensorEntry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, 0, False
    for number, wire, value in _fields(buf, where):
        if number == 1 and wire == 0:
            dtype = value
        elif number == 2 and wire == 2:
            shape = _parse_shape(value, where)
        elif number == 3 and wire == 0:
            shard = _int64(value)
        elif number == 4 and wire == 0:
            offset = _int64(value)
        elif number == 5 and wire == 0:
            size = _int64(value)
        elif number == 6 and wire == 5:
            crc = struct.unpack("<I", value)[0]
        elif number == 7:
            sliced = True
    return TensorEntry(name, DTYPES.get(dtype, f"dtype_{dtype}"), shape, shard, offset, size,
                       crc, sliced)


# ---------------------------------------------------------------- CRC32C and snappy
def _crc_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of `data`: the checksum TF's table and bundle formats use."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_MASK_DELTA = 0xa282ead8


def _unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def snappy_decompress(data: bytes, where: str = "snappy block") -> bytes:
    """Raw snappy (the block format TF's tables may use); CheckpointError on bad input."""
    def bad(what):
        return CheckpointError(f"a snappy-compressed index block is corrupt ({what}).",
                               where=where, fix=_FIX)

    length, pos = _varint(data, 0, where)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:                                       # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                n = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > len(data):
                raise bad("a literal runs past the block")
            out += data[pos:pos + n]
            pos += n
            continue
        if kind == 1:
            n = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise bad("a copy reaches before the start")
        for _ in range(n):                                  # copies may overlap
            out.append(out[-offset])
    if len(out) != length:
        raise bad(f"{len(out)} bytes decoded, {length} announced")
    return bytes(out)
