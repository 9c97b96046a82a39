"""Record timestamps read with raw Fetch requests to each partition's leader.

A consumer poll loop is the wrong tool for dating one record per partition: it keeps
fetch sessions, buffers whole fetches and walks every assigned partition on each position
check. Here each round is one sessionless Fetch (no incremental fetch session is built on
the broker for a one-shot read) per MAX_PARTITIONS_PER_FETCH partitions, sent to the
leader with at most two in flight, asking only as many bytes of each partition as it takes to find the
record; `record_scan` reads the answers. Every request checks the deadline first, and its
timeout is what is left of it.

Blocking: runs in a worker thread, never on the reactor.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence

from kafka.protocol.consumer import FetchRequest

from .model import TP
from .record_scan import Aborted, FetchedPartition, FetchSpec, TimestampRead
from .timestamps import FetchItem

# Partitions per Fetch: bounds what one request makes the broker read and send (a request
# of every partition of a large cluster pinned a broker's request handler for minutes).
MAX_PARTITIONS_PER_FETCH = 256
# Version 13 and later name topics by id; 12 names them, and every broker of Kafka 2.8+ has it.
FETCH_MAX_VERSION = 12
# Version 4 adds the isolation level.
FETCH_MIN_VERSION = 4
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
# A sessionless full fetch: session id 0 and epoch -1 ask the broker to keep no session.
_NO_SESSION, _FINAL_EPOCH = 0, -1

# Sends one request to the leader, to be answered within a timeout in seconds; returns the
# wait for its response (which raises what the request failed with).
Start = Callable[[Any, float], Callable[[], Any]]


def fetch_request(specs: Sequence[FetchSpec], isolation: int) -> Any:
    """A sessionless Fetch of *specs*, answered at once (no waiting for data)."""
    by_topic: Dict[str, List[FetchSpec]] = {}
    for spec in specs:
        by_topic.setdefault(spec.topic, []).append(spec)
    topic, partition = FetchRequest.FetchTopic, FetchRequest.FetchTopic.FetchPartition
    return FetchRequest(
        replica_id=-1, max_wait_ms=0, min_bytes=1,
        max_bytes=sum(s.max_bytes for s in specs), isolation_level=isolation,
        session_id=_NO_SESSION, session_epoch=_FINAL_EPOCH,
        topics=[topic(topic=name, partitions=[
            partition(partition=s.partition, fetch_offset=s.offset, partition_max_bytes=s.max_bytes)
            for s in parts]) for name, parts in by_topic.items()],
        forgotten_topics_data=[], rack_id="",
        min_version=FETCH_MIN_VERSION, max_version=FETCH_MAX_VERSION,
    )


def fetched_partitions(response: Any) -> Dict[TP, FetchedPartition]:
    """Each partition of a Fetch response as plain data."""
    out: Dict[TP, FetchedPartition] = {}
    for topic in response.responses:
        for p in topic.partitions:
            aborted = tuple(Aborted(a.producer_id, a.first_offset)
                            for a in p.aborted_transactions or ())
            out[(topic.topic, p.partition_index)] = FetchedPartition(
                p.error_code, p.high_watermark, p.last_stable_offset, aborted,
                bytes(p.records or b""))
    return out


def read(items: Sequence[FetchItem], start: Start, committed: bool, deadline: float,
         clock: Callable[[], float] = time.monotonic) -> TimestampRead:
    """Fetch rounds until every item is answered, held or given up, or *deadline* passes."""
    state = TimestampRead(items, committed)
    isolation = READ_COMMITTED if committed else READ_UNCOMMITTED
    while not state.done and clock() < deadline:
        _round(state, state.wanted(), start, isolation, deadline, clock)
    return state


def _round(state: TimestampRead, wanted: List[FetchSpec], start: Start, isolation: int,
           deadline: float, clock: Callable[[], float]) -> None:
    # Each Fetch is sent before the answer to the one before it is read: two in flight at
    # most, and the broker reads the next while this thread reads the last.
    waiting = None
    for begin in range(0, len(wanted), MAX_PARTITIONS_PER_FETCH):
        left = deadline - clock()
        if left <= 0:
            break
        sent = start(fetch_request(wanted[begin:begin + MAX_PARTITIONS_PER_FETCH], isolation),
                     left)
        if waiting is not None:
            _absorb(state, waiting())
        waiting = sent
    if waiting is not None:
        _absorb(state, waiting())


def _absorb(state: TimestampRead, response: Any) -> None:
    for tp, fetched in fetched_partitions(response).items():
        state.absorb(tp, fetched)
