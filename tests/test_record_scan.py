"""Dating records from raw Fetch answers: batches built byte for byte with kafka-python's
record builder, read as a read_committed consumer receives them."""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Sequence

from hypothesis import given, settings, strategies as st

from klag_collector.record_age import CaughtUp
from klag_collector.record_scan import (
    MAX_PARTITION_BYTES,
    MAX_STALLS,
    PARTITION_BYTES,
    Aborted,
    FetchedPartition,
    FetchSpec,
    TimestampRead,
    scan,
)
from klag_collector.timestamps import FetchItem
from kafka.record import MemoryRecordsBuilder

_ATTRIBUTES = 21  # where a v2 batch's attributes are, after offset, length, epoch, magic, crc
_CONTROL = 0x20


def batch(base: int, stamps: Sequence[Optional[int]], producer: int = -1,
          marker: Optional[str] = None) -> bytes:
    """A v2 batch of records at offsets base, base + 1, ...; transactional when *producer*
    is given; a control batch (one "abort" or "commit" marker) when *marker* is."""
    builder = MemoryRecordsBuilder(2, 0, 1 << 20, transactional=producer >= 0,
                                   producer_id=producer, producer_epoch=0 if producer >= 0 else -1,
                                   base_sequence=0 if producer >= 0 else -1)
    if marker is not None:
        builder.append(timestamp=1, key=struct.pack(">hh", 0, 0 if marker == "abort" else 1),
                       value=b"")
    for stamp in stamps:
        builder.append(timestamp=-1 if stamp is None else stamp, key=None, value=b"v")
    builder.close()
    raw = bytearray(builder.buffer())
    struct.pack_into(">q", raw, 0, base)
    if marker is not None:
        attributes, = struct.unpack_from(">h", raw, _ATTRIBUTES)
        struct.pack_into(">h", raw, _ATTRIBUTES, attributes | _CONTROL)
    return bytes(raw)


def test_each_wanted_offset_is_dated_by_the_first_record_at_or_after_it() -> None:
    records = batch(10, [100, 200, 300]) + batch(13, [400])
    result = scan(records, [10, 12, 13], 10, committed=True)
    assert result.found == {10: 100, 12: 300, 13: 400}
    assert result.whole


def test_records_before_the_fetch_offset_are_not_the_ones_asked_for() -> None:
    """A Fetch at 11 answers the batch holding 11, which starts at 10."""
    result = scan(batch(10, [100, 200, 300]), [11], 11, committed=True)
    assert result.found == {11: 200}


def test_the_scan_stops_once_every_offset_is_dated() -> None:
    result = scan(batch(0, [1, 2]) + batch(2, [3, 4]), [0], 0, committed=True)
    assert result.found == {0: 1}
    assert result.next_offset == 2, "the second batch is not read"


def test_a_record_without_a_timestamp_dates_its_offset_as_none() -> None:
    assert scan(batch(0, [None]), [0], 0, committed=True).found == {0: None}


def test_markers_and_aborted_batches_are_never_dated_read_committed() -> None:
    """0-1 aborted (producer 7), 2 its abort marker, 3 committed: all wait on record 3."""
    records = batch(0, [10, 20], producer=7) + batch(2, [], producer=7, marker="abort") \
        + batch(3, [40])
    aborted = [Aborted(producer_id=7, first_offset=0)]
    assert scan(records, [0, 1, 2, 3], 0, True, aborted).found == {0: 40, 1: 40, 2: 40, 3: 40}
    # Read uncommitted, the aborted records are what a consumer receives.
    assert scan(records, [0, 2], 0, False).found == {0: 10, 2: 40}


def test_a_committed_transaction_is_read_and_its_marker_skipped() -> None:
    records = batch(0, [10, 20], producer=7) + batch(2, [], producer=7, marker="commit") \
        + batch(3, [40])
    assert scan(records, [1, 2], 0, True, ()).found == {1: 20, 2: 40}


def test_only_markers_ahead_leave_the_offset_undated_with_the_read_past_them() -> None:
    records = batch(0, [10], producer=7) + batch(1, [], producer=7, marker="commit")
    result = scan(records, [1], 1, True)
    assert result.found == {}
    assert result.next_offset == 2


def test_a_truncated_first_batch_is_not_whole() -> None:
    records = batch(0, [10, 20, 30])
    result = scan(records[:-5], [0], 0, True)
    assert (result.found, result.whole, result.next_offset) == ({}, False, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6),
       st.data())
def test_scan_answers_like_a_plain_walk_of_the_log(sizes: List[int], data: st.DataObject) -> None:
    """Property: whatever the batching, each wanted offset gets the time of the first record
    at or after it, and nothing beyond the log is answered."""
    log: List[int] = []
    records = b""
    for size in sizes:
        stamps = [1000 + len(log) + i for i in range(size)]
        records += batch(len(log), stamps)
        log += stamps
    wanted = sorted(set(data.draw(st.lists(st.integers(0, len(log) - 1), min_size=1))))
    start = data.draw(st.integers(0, wanted[0]))
    assert scan(records, wanted, start, True).found == {w: log[w] for w in wanted}


# -- TimestampRead: the state of a read across Fetch rounds ---------------------------------


def answer(records: bytes = b"", hw: int = 0, lso: int = -1, error: int = 0,
           aborted: Sequence[Aborted] = ()) -> FetchedPartition:
    return FetchedPartition(error, hw, lso, tuple(aborted), records)


def test_a_read_moves_to_the_next_wanted_offset_until_all_are_dated() -> None:
    read = TimestampRead([FetchItem(("t", 0, 0), 100, 1), FetchItem(("t", 0, 50), 100, 1)], True)
    assert read.wanted() == [FetchSpec("t", 0, 0, PARTITION_BYTES)]
    read.absorb(("t", 0), answer(batch(0, [5, 6]), hw=100, lso=100))
    assert read.found == {("t", 0, 0): 5}
    assert read.wanted() == [FetchSpec("t", 0, 50, PARTITION_BYTES)]
    read.absorb(("t", 0), answer(batch(50, [9]), hw=100, lso=100))
    assert read.found == {("t", 0, 0): 5, ("t", 0, 50): 9}
    assert read.done


def test_a_read_to_the_end_without_a_record_is_caught_up() -> None:
    """Only a marker between the offset and the end: CaughtUp where the read ended."""
    read = TimestampRead([FetchItem(("t", 0, 2), 3, 1)], True)
    read.absorb(("t", 0), answer(batch(2, [], producer=3, marker="commit"), hw=3, lso=3))
    assert read.found == {("t", 0, 2): CaughtUp(3)}
    assert read.done


def test_a_read_stopped_at_the_last_stable_offset_is_held_by_an_open_transaction() -> None:
    read = TimestampRead([FetchItem(("t", 0, 1), 7, 1), FetchItem(("t", 0, 5), 7, 1)], True)
    read.absorb(("t", 0), answer(b"", hw=7, lso=1))
    assert read.found == {}
    assert read.held == {("t", 0, 1): (1, 7), ("t", 0, 5): (1, 7)}


def test_an_error_answer_leaves_the_partition_unknown() -> None:
    read = TimestampRead([FetchItem(("t", 0, 1), 7, 1)], True)
    read.absorb(("t", 0), answer(error=6))
    assert (read.found, read.held, read.done, read.given_up) == ({}, {}, True, 1)


def test_a_batch_larger_than_asked_is_asked_again_with_more_bytes_up_to_a_limit() -> None:
    read = TimestampRead([FetchItem(("t", 0, 0), 9, 1)], True)
    cut = batch(0, [1, 2, 3])[:20]
    sizes = []
    while not read.done:
        sizes.append(read.wanted()[0].max_bytes)
        read.absorb(("t", 0), answer(cut, hw=9, lso=9))
    assert sizes[0] == PARTITION_BYTES and sizes[-1] == MAX_PARTITION_BYTES
    assert sizes == sorted(sizes) and read.given_up == 1


def test_a_read_that_does_not_move_is_given_up() -> None:
    read = TimestampRead([FetchItem(("t", 0, 4), 9, 1)], True)
    rounds = 0
    while not read.done:
        read.absorb(("t", 0), answer(b"", hw=9, lso=9))
        rounds += 1
    assert rounds == MAX_STALLS and read.found == {}


def test_partitions_are_read_side_by_side() -> None:
    items = [FetchItem(("t", p, 0), 1, 1) for p in range(3)]
    read = TimestampRead(items, True)
    assert [s.partition for s in read.wanted()] == [0, 1, 2]
    for p in range(3):
        read.absorb(("t", p), answer(batch(0, [p]), hw=1, lso=1))
    found: Dict[object, object] = dict(read.found)
    assert found == {("t", p, 0): p for p in range(3)}
