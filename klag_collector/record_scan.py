"""Reading record timestamps out of raw Fetch answers: what a read_committed consumer receives.

Pure: no I/O, no clock. `scan` walks the record batches one Fetch returned for a partition
the way kafka-python's consumer does (control batches skipped, and, read committed, the
batches of aborted transactions), and dates each wanted offset by the first data record at
or after it, stopping as soon as every wanted offset is dated. `TimestampRead` keeps the
state of one batched read across Fetch rounds: what to ask each partition next, what was
answered, and which reads an open transaction holds. `record_fetch` does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from kafka.record import MemoryRecords

from .model import TP, RecordKey
from .record_age import CaughtUp, RecordTime
from .timestamps import FetchItem

# Fetch rounds in a row in which a partition's read may not move before it is given up.
MAX_STALLS = 3
# Bytes asked per partition at first: a few small batches, enough to date a record.
PARTITION_BYTES = 16 * 1024
# The most asked per partition, for a batch that did not fit (the broker's default limit
# on a batch is 1 MiB; topics may raise it).
MAX_PARTITION_BYTES = 16 * 1024 * 1024


class Aborted(NamedTuple):
    """An aborted transaction a read_committed Fetch answer lists for a partition."""

    producer_id: int
    first_offset: int


class FetchedPartition(NamedTuple):
    """One partition of a Fetch answer, as plain data."""

    error_code: int
    high_watermark: int
    # -1 where the answer has none (read uncommitted)
    last_stable_offset: int
    aborted: Tuple[Aborted, ...]
    records: bytes


class Scan(NamedTuple):
    """What one partition's fetched records answered."""

    # wanted offset -> the time of the first data record at or after it (None: no time)
    found: Dict[int, Optional[int]]
    # where a next read would start: after the last whole batch read (or where this one did)
    next_offset: int
    # whether a whole batch was there: False means the first batch did not fit
    whole: bool


def _batches(records: bytes) -> Iterator[object]:
    memory = MemoryRecords(records)
    while True:
        batch = memory.next_batch()
        if batch is None:
            return
        yield batch


def scan(records: bytes, wanted: Sequence[int], fetch_offset: int, committed: bool,
         aborted: Sequence[Aborted] = ()) -> Scan:
    """Date the *wanted* offsets (ascending, none below *fetch_offset*) from one partition's
    fetched *records*."""
    found: Dict[int, Optional[int]] = {}
    queue = sorted(aborted, key=lambda a: a.first_offset)
    aborting: Set[int] = set()
    position, whole, at = fetch_offset, False, 0
    for batch in _batches(records):
        whole = True
        if batch.magic >= 2:  # type: ignore[attr-defined]
            skip = committed and _skipped(batch, queue, aborting)
            position = batch.next_offset  # type: ignore[attr-defined]
            if skip or batch.is_control_batch:  # type: ignore[attr-defined]
                continue
        for record in batch:  # type: ignore[attr-defined]
            position = max(position, record.offset + 1)
            stamp = record.timestamp
            stamp = stamp if stamp is not None and stamp >= 0 else None
            while at < len(wanted) and wanted[at] <= record.offset:
                found[wanted[at]] = stamp
                at += 1
            if at == len(wanted):
                return Scan(found, position, whole)
    return Scan(found, position, whole)


def _skipped(batch: object, queue: List[Aborted], aborting: Set[int]) -> bool:
    """Whether a read_committed consumer skips *batch* (of an aborted transaction); keeps the
    set of producers whose aborted transaction is open at this point of the log."""
    if not batch.has_producer_id():  # type: ignore[attr-defined]
        return False
    while queue and queue[0].first_offset <= batch.last_offset:  # type: ignore[attr-defined]
        aborting.add(queue.pop(0).producer_id)
    producer = batch.producer_id  # type: ignore[attr-defined]
    if batch.is_control_batch:  # type: ignore[attr-defined]
        marker = next(iter(batch), None)  # type: ignore[call-overload]
        if marker is not None and marker.abort:
            aborting.discard(producer)
        return False
    return bool(batch.is_transactional) and producer in aborting  # type: ignore[attr-defined]


class FetchSpec(NamedTuple):
    """One partition of the next Fetch: where to read and how many bytes."""

    topic: str
    partition: int
    offset: int
    max_bytes: int


@dataclass(slots=True)
class _Partition:
    # (key, end offset) not answered yet, lowest offset first
    pending: List[Tuple[RecordKey, int]]
    offset: int
    max_bytes: int = PARTITION_BYTES
    stalls: int = 0


class TimestampRead:
    """One batched read of record timestamps across Fetch rounds (pure state).

    `wanted()` says what the next round asks; `absorb()` takes each partition's answer.
    Reads end answered (`found`), held by an open transaction (`held`: where the read
    stopped, the partition's end; read committed only), or given up (left unknown): an
    error answer, a batch too large to fetch, or a read that does not move.
    """

    def __init__(self, items: Sequence[FetchItem], committed: bool) -> None:
        self.committed = committed
        self.found: Dict[RecordKey, RecordTime] = {}
        self.held: Dict[RecordKey, Tuple[int, int]] = {}
        self.given_up = 0
        self._parts: Dict[TP, _Partition] = {}
        for item in sorted(items):
            tp = (item.key[0], item.key[1])
            part = self._parts.setdefault(tp, _Partition([], item.key[2]))
            part.pending.append((item.key, item.end_offset))

    @property
    def done(self) -> bool:
        return not self._parts

    def wanted(self) -> List[FetchSpec]:
        return [FetchSpec(tp[0], tp[1], p.offset, p.max_bytes) for tp, p in self._parts.items()]

    def absorb(self, tp: TP, fetched: FetchedPartition) -> None:
        """Take one partition's Fetch answer."""
        part = self._parts.get(tp)
        if part is None:
            return
        if fetched.error_code:
            self._give_up(tp)
            return
        offsets = [key[2] for key, _ in part.pending]
        result = scan(fetched.records, offsets, part.offset, self.committed, fetched.aborted)
        for key, _ in part.pending:
            if key[2] in result.found:
                self.found[key] = result.found[key[2]]
        part.pending = [(k, end) for k, end in part.pending if k[2] not in result.found]
        if not part.pending:
            del self._parts[tp]
        elif fetched.records and not result.whole:
            self._grow(tp, part)
        else:
            self._move(tp, part, result.next_offset, fetched)

    def _grow(self, tp: TP, part: _Partition) -> None:
        # The first batch did not fit in what was asked: ask for more, up to a limit.
        if part.max_bytes >= MAX_PARTITION_BYTES:
            self._give_up(tp)
        else:
            part.max_bytes = min(MAX_PARTITION_BYTES, part.max_bytes * 4)

    def _move(self, tp: TP, part: _Partition, position: int, fetched: FetchedPartition) -> None:
        stable = fetched.last_stable_offset
        limit = stable if self.committed and stable >= 0 else fetched.high_watermark
        if position >= limit:
            # Nothing more to receive now: only markers and aborted records (or nothing
            # compaction left) follow up to the limit.
            for key, end in part.pending:
                if limit >= end or not self.committed:
                    self.found[key] = CaughtUp(position)
                else:  # the last stable offset holds the read short of the end
                    self.held[key] = (position, end)
            del self._parts[tp]
            return
        offset = max(position, part.pending[0][0][2])
        part.stalls = part.stalls + 1 if offset == part.offset else 0
        part.offset = offset
        if part.stalls >= MAX_STALLS:
            self._give_up(tp)

    def _give_up(self, tp: TP) -> None:
        del self._parts[tp]
        self.given_up += 1
