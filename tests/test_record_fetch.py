"""The Fetch rounds of a timestamp read: chunks, requests in flight, the deadline."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, List

from klag_collector import record_fetch
from klag_collector.record_fetch import MAX_PARTITIONS_PER_FETCH, fetch_request, read
from klag_collector.timestamps import FetchItem
from test_record_scan import batch


class FakeLeader:
    """Answers each Fetch with one record of time 1000 + partition at the fetched offset,
    and keeps a log of sends and waits to show what was in flight."""

    def __init__(self) -> None:
        self.log: List[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests: List[Any] = []

    def start(self, request: Any, timeout: float) -> Callable[[], Any]:
        self.requests.append(request)
        n = len(self.requests)
        self.log.append(f"send {n}")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

        def wait() -> Any:
            self.in_flight -= 1
            self.log.append(f"wait {n}")
            return SimpleNamespace(responses=[
                SimpleNamespace(topic=topic.topic, partitions=[
                    SimpleNamespace(partition_index=p.partition, error_code=0, high_watermark=100,
                                    last_stable_offset=100, aborted_transactions=None,
                                    records=batch(p.fetch_offset, [1000 + p.partition]))
                    for p in topic.partitions])
                for topic in request.topics])

        return wait


def items(n: int) -> List[FetchItem]:
    return [FetchItem(("t", p, 5), 100, 1) for p in range(n)]


def test_partitions_are_fetched_in_bounded_chunks_two_in_flight_at_most() -> None:
    leader = FakeLeader()
    n = 2 * MAX_PARTITIONS_PER_FETCH + 10
    state = read(items(n), leader.start, True, deadline=float("inf"))
    assert state.found == {("t", p, 5): 1000 + p for p in range(n)}
    assert [len(r.topics[0].partitions) for r in leader.requests] == [
        MAX_PARTITIONS_PER_FETCH, MAX_PARTITIONS_PER_FETCH, 10]
    assert leader.log == ["send 1", "send 2", "wait 1", "send 3", "wait 2", "wait 3"]
    assert leader.most_in_flight == 2


def test_no_request_is_sent_once_the_deadline_has_passed() -> None:
    leader = FakeLeader()
    times = iter([0.0, 0.5, 2.0, 2.0, 2.0])
    state = read(items(3 * MAX_PARTITIONS_PER_FETCH), leader.start, True, deadline=1.0,
                 clock=lambda: next(times))
    assert len(leader.requests) == 1
    assert len(state.found) == MAX_PARTITIONS_PER_FETCH


def test_a_fetch_is_sessionless_and_answered_at_once() -> None:
    request = fetch_request(record_fetch.TimestampRead(items(2), True).wanted(),
                            record_fetch.READ_COMMITTED)
    assert (request.session_id, request.session_epoch) == (0, -1)
    assert (request.max_wait_ms, request.isolation_level) == (0, 1)
    assert [p.fetch_offset for p in request.topics[0].partitions] == [5, 5]
