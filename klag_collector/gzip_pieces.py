"""Text compressed piece by piece, and joined into one gzip body without compressing again.

A render pass keeps each family's sample lines compressed, not as text: 65k series are ~10 MB
of text and ~250 KB deflated. A piece is raw deflate ended by a sync flush, so it is a run of
non-final, byte-aligned blocks that refer only to its own bytes; pieces laid end to end, then
one final empty block, are one valid deflate stream (as pigz joins the blocks it compresses in
parallel). The gzip trailer's CRC-32 is combined from the pieces' own, so the text is never
needed again to serve the gzipped body, and a family whose lines did not change is not
compressed again.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterable, List, NamedTuple, Sequence

# Level 1: on this repetitive text it takes half the time of level 6 (54 vs 117 ms for
# 65k series, 10 MB) for 13% more bytes (245 vs 216 KB), and a pass's CPU matters more.
LEVEL = 1
# Raw deflate: the gzip header and trailer are written once per body, not per piece.
_RAW = -15
# gzip header: deflate, no name, mtime 0 (as `gzip -n` writes), fastest, unknown OS.
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
# A final block of fixed codes holding only end-of-block: it closes the deflate stream.
_FINAL_BLOCK = b"\x03\x00"
_MASK = 0xFFFFFFFF


class Piece(NamedTuple):
    """Some text, deflated, with what the gzip trailer needs to know of it."""

    deflated: bytes
    crc: int
    size: int
    # x^(8 * size) modulo the CRC-32 polynomial: what a CRC is multiplied by to move it past
    # this text, so that joining pieces costs a multiplication each, whatever their size.
    shift: int


def deflate(text: bytes) -> Piece:
    """*text* as a piece (compressed now: blocking, in a worker thread for large text)."""
    return deflate_chunks((text,))


def deflate_chunks(chunks: Iterable[bytes]) -> Piece:
    """The text of *chunks*, one after the other, as one piece."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, _RAW)
    deflated: List[bytes] = []
    crc = 0
    size = 0
    for chunk in chunks:
        deflated.append(packer.compress(chunk))
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
    if not size:
        return EMPTY
    deflated.append(packer.flush(zlib.Z_SYNC_FLUSH))
    return Piece(b"".join(deflated), crc, size, x8n(size))


# -- CRC-32 arithmetic, as zlib's crc32_combine does it (crc32.c), which Python does not offer.
# Polynomials modulo the CRC-32 one are 32-bit words, bit-reflected: x^0 is the top bit.
_POLY = 0xEDB88320
_ONE = 1 << 31


def _multiply(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC-32 polynomial."""
    product = 0
    bit = _ONE
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers_of_x() -> List[int]:
    # x^(2^k) for k = 0..31, squaring the last one each time; as in zlib, the 32 repeat.
    powers = [_ONE >> 1]
    for _ in range(31):
        powers.append(_multiply(powers[-1], powers[-1]))
    return powers


_X_TO_2_TO_THE = _powers_of_x()


def x8n(size: int) -> int:
    """x^(8 * size) modulo the CRC-32 polynomial: the shift of `size` bytes."""
    power = _ONE
    k = 3  # 8 * size = size * 2^3
    while size:
        if size & 1:
            power = _multiply(_X_TO_2_TO_THE[k & 31], power)
        size >>= 1
        k += 1
    return power


EMPTY = Piece(b"", 0, 0, x8n(0))


def crc32_combine(first: int, second: int, second_shift: int) -> int:
    """The CRC-32 of two texts one after the other, from the CRC-32 of each and the shift of
    the second (x8n of its size).

    The register after a text is affine in the register before it; moving the first text's
    CRC past the second text multiplies it by x^(8 * size), and the second's CRC adds in
    (GF(2) sums are XOR).
    """
    return _multiply(second_shift, first) ^ second


def gzip_body(pieces: Iterable[Piece]) -> bytes:
    """One gzip member holding the pieces' texts in order."""
    out: List[bytes] = [_HEADER]
    crc = 0
    size = 0
    for piece in pieces:
        if piece.size:
            out.append(piece.deflated)
            crc = crc32_combine(crc, piece.crc, piece.shift)
            size += piece.size
    out.append(_FINAL_BLOCK)
    out.append(struct.pack("<II", crc, size & _MASK))
    return b"".join(out)


def inflate(pieces: Sequence[Piece]) -> List[bytes]:
    """The pieces' texts, in order."""
    return [zlib.decompressobj(_RAW).decompress(piece.deflated) for piece in pieces if piece.size]
