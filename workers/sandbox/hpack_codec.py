"""HPACK (RFC 7541) decoder and encoder tuned for the sandbox's request pattern.

The `hpack` package that h2 uses by default dominated the sandbox's per-request cost in
profiles (about half of it): its decoder builds header tuple objects, logs at debug level
for every header, and decodes Huffman strings one nibble at a time. `HeaderDecoder` is a
drop-in for h2's `decoder` attribute with the same table semantics. It reads Huffman
strings a whole byte at a time through a table composed from hpack's own nibble table, and
it caches short decoded strings because a client sends the same `authorization` value on
every request.

`HeaderEncoder` never uses the dynamic table and never Huffman-codes: responses go over
loopback, so compression would cost CPU and save nothing. It announces a dynamic table
size of 0 in its first header block, which RFC 7541 section 4.2 allows at any time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import hpack.huffman_table as huffman_table
from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]

STATIC_TABLE: tuple[Header, ...] = tuple(HeaderTable.STATIC_TABLE)
STATIC_TABLE_LENGTH = len(STATIC_TABLE)
DEFAULT_TABLE_SIZE = 4096
# RFC 7541 section 4.1: each table entry costs its name and value length plus 32 bytes.
ENTRY_OVERHEAD = 32

# Strings longer than this are not cached: paths carrying device tokens rarely repeat.
MAX_CACHED_STRING_BYTES = 512
MAX_CACHE_ENTRIES = 4096


def _build_byte_table() -> list[tuple[int, bytes, bool, bool]]:
    """Compose two nibble steps of hpack's Huffman table into one step per input byte.

    Entry (state * 256 + byte) contains the next state, the bytes emitted, whether the input
    is invalid, and whether the state ends a complete code (so padding may follow).
    """
    nibble_table = huffman_table.HUFFMAN_TABLE
    fail = huffman_table.HUFFMAN_FAIL
    emit = huffman_table.HUFFMAN_EMIT_SYMBOL
    complete = huffman_table.HUFFMAN_COMPLETE
    table: list[tuple[int, bytes, bool, bool]] = []
    for state in range(len(nibble_table) // 16):
        for byte in range(256):
            emitted = bytearray()
            next_state, flags, symbol = nibble_table[state * 16 + (byte >> 4)]
            failed = bool(flags & fail)
            if flags & emit:
                emitted.append(symbol)
            if not failed:
                next_state, flags, symbol = nibble_table[next_state * 16 + (byte & 0x0F)]
                failed = bool(flags & fail)
                if flags & emit:
                    emitted.append(symbol)
            table.append((next_state, bytes(emitted), failed, bool(flags & complete)))
    return table


_BYTE_TABLE = _build_byte_table()
_huffman_cache: dict[bytes, bytes] = {}


def decode_huffman(encoded: bytes) -> bytes:
    """Decode an HPACK Huffman string, raising HPACKDecodingError on invalid input."""
    cached = _huffman_cache.get(encoded)
    if cached is not None:
        return cached

    table = _BYTE_TABLE
    state = 0
    complete = True
    parts: list[bytes] = []
    for byte in encoded:
        state, emitted, failed, complete = table[(state << 8) | byte]
        if failed:
            raise HPACKDecodingError("Invalid Huffman string")
        if emitted:
            parts.append(emitted)
    if not complete:
        raise HPACKDecodingError("Incomplete Huffman string")

    decoded = b"".join(parts)
    if len(encoded) <= MAX_CACHED_STRING_BYTES:
        if len(_huffman_cache) >= MAX_CACHE_ENTRIES:
            _huffman_cache.clear()
        _huffman_cache[encoded] = decoded
    return decoded


def _decode_integer(data: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """Decode an integer with an N-bit prefix starting at `position`; return value and end."""
    prefix_max = (1 << prefix_bits) - 1
    value = data[position] & prefix_max
    position += 1
    if value < prefix_max:
        return value, position

    shift = 0
    while True:
        if position >= len(data):
            raise HPACKDecodingError("Unexpected end of integer")
        byte = data[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 28:
            raise HPACKDecodingError("Integer too large")


class HeaderDecoder:
    """HPACK decoder with the attributes h2 sets on its `decoder`."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.max_allowed_table_size = max_table_size
        self.max_header_list_size = 65536
        self._table: deque[Header] = deque()
        self._table_size = 0
        self._table_max = max_table_size

    @property
    def header_table_size(self) -> int:
        return self._table_max

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_max = value
        self._evict()

    def decode(self, data: bytes, raw: bool = True) -> list[Header]:
        """Decode one header block into (name, value) byte pairs; `raw` must stay True."""
        headers: list[Header] = []
        append = headers.append
        position = 0
        length = len(data)
        list_size = 0
        while position < length:
            first = data[position]
            if first & 0x80:
                index, position = _decode_integer(data, position, 7)
                header = self._lookup(index)
            elif first & 0x40:
                header, position = self._read_literal(data, position, 6)
                self._add(header)
            elif first & 0x20:
                size, position = _decode_integer(data, position, 5)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError(f"table size {size} exceeds the maximum")
                self._table_max = size
                self._evict()
                continue
            else:
                header, position = self._read_literal(data, position, 4)
            append(header)
            list_size += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            if list_size > self.max_header_list_size:
                raise OversizedHeaderListError(f"header list larger than {list_size} bytes")
        return headers

    def _lookup(self, index: int) -> Header:
        if index == 0:
            raise HPACKDecodingError("header index 0 is invalid")
        if index <= STATIC_TABLE_LENGTH:
            return STATIC_TABLE[index - 1]
        dynamic_index = index - STATIC_TABLE_LENGTH - 1
        if dynamic_index >= len(self._table):
            raise HPACKDecodingError(f"header index {index} is out of range")
        return self._table[dynamic_index]

    def _read_literal(self, data: bytes, position: int, prefix_bits: int) -> tuple[Header, int]:
        name_index, position = _decode_integer(data, position, prefix_bits)
        if name_index:
            name = self._lookup(name_index)[0]
        else:
            name, position = _read_string(data, position)
        value, position = _read_string(data, position)
        return (name, value), position

    def _add(self, header: Header) -> None:
        size = len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
        if size > self._table_max:
            self._table.clear()
            self._table_size = 0
            return
        self._table.appendleft(header)
        self._table_size += size
        self._evict()

    def _evict(self) -> None:
        while self._table_size > self._table_max and self._table:
            name, value = self._table.pop()
            self._table_size -= len(name) + len(value) + ENTRY_OVERHEAD


def _read_string(data: bytes, position: int) -> tuple[bytes, int]:
    if position >= len(data):
        raise HPACKDecodingError("Unexpected end of header block")
    huffman = data[position] & 0x80
    length, position = _decode_integer(data, position, 7)
    end = position + length
    if end > len(data):
        raise HPACKDecodingError("String longer than the header block")
    value = data[position:end]
    if huffman:
        value = decode_huffman(value)
    return value, end


def _encode_integer(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    prefix_max = (1 << prefix_bits) - 1
    if value < prefix_max:
        return bytes([first_byte_flags | value])
    encoded = bytearray([first_byte_flags | prefix_max])
    value -= prefix_max
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _literal_string(value: bytes) -> bytes:
    return _encode_integer(len(value), 7, 0x00) + value


# Status codes in the static table, encoded as one indexed-field byte.
_STATUS_INDEXED = {
    value: bytes([0x80 | (index + 1)])
    for index, (name, value) in enumerate(STATIC_TABLE)
    if name == b":status"
}
# ":status" as a literal without indexing, name taken from static index 8.
_STATUS_LITERAL_PREFIX = _encode_integer(8, 4, 0x00)


class HeaderEncoder:
    """HPACK encoder writing literals without indexing and without Huffman coding."""

    def __init__(self) -> None:
        self.header_table_size = DEFAULT_TABLE_SIZE
        self._size_update_sent = False
        self._name_cache: dict[bytes, bytes] = {}

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = False) -> bytes:
        parts: list[bytes] = []
        if not self._size_update_sent:
            parts.append(_encode_integer(0, 5, 0x20))
            self._size_update_sent = True
        for name, value in headers:
            if name == b":status":
                indexed = _STATUS_INDEXED.get(value)
                parts.append(indexed or _STATUS_LITERAL_PREFIX + _literal_string(value))
                continue
            encoded_name = self._name_cache.get(name)
            if encoded_name is None:
                encoded_name = b"\x00" + _literal_string(name)
                self._name_cache[name] = encoded_name
            parts.append(encoded_name)
            parts.append(_literal_string(value))
        return b"".join(parts)
