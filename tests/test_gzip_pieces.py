"""Pieces deflated apart and joined into one gzip member (klag_collector.gzip_pieces)."""

from __future__ import annotations

import gzip
import struct
import unittest
import zlib
from typing import List

from hypothesis import given, settings
from hypothesis import strategies as st

from klag_collector import gzip_pieces
from klag_collector.gzip_pieces import crc32_combine, deflate, gzip_body, inflate, x8n

_MASK = 0xFFFFFFFF

texts = st.lists(st.binary(max_size=3000), max_size=8)
# Lines like the exporter's: repetitive, so deflate uses back-references inside a piece.
lines = st.lists(
    st.builds(lambda n, v: b'kafka_consumergroup_group_lag{group="g%d"} %d\n' % (n, v),
              st.integers(0, 50), st.integers(0, 10**6)),
    max_size=200,
).map(b"".join)


def one_member(body: bytes) -> bytes:
    """The body decoded as exactly one gzip member, nothing after it."""
    unpacker = zlib.decompressobj(31)
    text = unpacker.decompress(body)
    assert unpacker.eof and unpacker.unused_data == b"", "not one whole gzip member"
    return text


class GzipBodyTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.one_of(st.binary(max_size=3000), lines), max_size=8))
    def test_the_body_is_one_member_holding_the_texts_in_order(self, parts: List[bytes]) -> None:
        body = gzip_body(deflate(part) for part in parts)
        self.assertEqual(one_member(body), b"".join(parts))
        self.assertEqual(gzip.decompress(body), b"".join(parts))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=5000), st.binary(max_size=5000))
    def test_combined_crc_equals_the_crc_of_both_texts(self, first: bytes, second: bytes) -> None:
        self.assertEqual(crc32_combine(zlib.crc32(first), zlib.crc32(second), x8n(len(second))),
                         zlib.crc32(first + second))

    @settings(max_examples=50, deadline=None)
    @given(st.integers(0, 3_000_000), st.integers(0, _MASK))
    def test_a_shift_moves_a_crc_as_zero_bytes_do(self, size: int, crc: int) -> None:
        """x8n(size) is what `size` zero bytes do to a CRC register (zlib's own arithmetic)."""
        self.assertEqual(crc32_combine(crc, 0, x8n(size)),
                         zlib.crc32(bytes(size), crc ^ _MASK) ^ _MASK)

    @given(st.integers(0, 2**40), st.integers(0, 2**40))
    def test_shifts_of_any_size_multiply(self, first: int, second: int) -> None:
        """Past 4 GiB too: shifting by a then b is shifting by a + b."""
        self.assertEqual(crc32_combine(x8n(first), 0, x8n(second)), x8n(first + second))

    @given(texts)
    def test_chunks_are_one_piece_of_their_text(self, chunks: List[bytes]) -> None:
        piece = gzip_pieces.deflate_chunks(chunks)
        text = b"".join(chunks)
        self.assertEqual((piece.crc, piece.size, piece.shift), (zlib.crc32(text), len(text), x8n(len(text))))
        self.assertEqual(inflate([piece]), [text] if text else [])
        self.assertEqual(piece == gzip_pieces.EMPTY, not text)

    @given(texts)
    def test_inflate_gives_back_each_text(self, parts: List[bytes]) -> None:
        pieces = [deflate(part) for part in parts]
        self.assertEqual(inflate(pieces), [part for part in parts if part])

    def test_a_piece_is_reused_in_any_order(self) -> None:
        first, second = deflate(b"a" * 1000 + b"\n"), deflate(b"b\n" * 300)
        self.assertEqual(gzip.decompress(gzip_body([second, first, second])),
                         b"b\n" * 300 + b"a" * 1000 + b"\n" + b"b\n" * 300)

    def test_no_piece_is_an_empty_member(self) -> None:
        body = gzip_body([])
        self.assertEqual(one_member(body), b"")
        self.assertEqual(body[-8:], struct.pack("<II", 0, 0))

    def test_an_empty_text_is_the_empty_piece(self) -> None:
        self.assertIs(deflate(b""), gzip_pieces.EMPTY)

    def test_trailer_holds_crc_and_size(self) -> None:
        text = b"x" * 70_000 + b"y" * 5
        body = gzip_body([deflate(text[:40_000]), deflate(text[40_000:])])
        self.assertEqual(body[-8:], struct.pack("<II", zlib.crc32(text), len(text)))
        self.assertEqual(body[:4], b"\x1f\x8b\x08\x00")

    def test_a_piece_is_smaller_than_its_repetitive_text(self) -> None:
        text = b"".join(b'kafka_consumergroup_group_lag{group="g%d"} 12\n' % i for i in range(1000))
        self.assertLess(len(deflate(text).deflated), len(text) // 5)


if __name__ == "__main__":
    unittest.main()
