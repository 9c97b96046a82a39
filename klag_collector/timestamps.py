"""Record timestamps for time lag: a TTL cache, and a sampler that batches fetches per leader.

The cache is plain data with `now` passed in. The sampler asks the Kafka edge for the
records the cache lacks, one batched fetch per leader broker, at most
`max_concurrent_fetches` at a time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from .errors import describe_error
from .lag import timestamp_requests
from .model import CacheStats, ClusterData, RecordKey

# A batch handed to the Kafka edge: the records to read, each with the partition's end
# offset so the fetcher can tell "no record there" from "not fetched yet".
FetchItem = Tuple[RecordKey, int]
# Runs the blocking fetch of one batch; returns key -> timestamp ms (None: no record).
FetchBatch = Callable[[List[FetchItem]], "defer.Deferred[Dict[RecordKey, Optional[int]]]"]

log = Logger()


class TimestampCache:
    """Timestamps keyed by (topic, partition, offset), kept for `ttl` seconds.

    A record's timestamp never changes, so an entry could live forever; the TTL bounds
    memory and lets a "no record" miss be retried once the partition has moved on.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: Dict[RecordKey, Tuple[Optional[int], float]] = {}
        self._last_sweep: Optional[float] = None
        self.hits = 0
        self.misses = 0
        self.fetch_errors = 0

    def lookup(self, key: RecordKey, now: float) -> Tuple[bool, Optional[int]]:
        """(True, timestamp) on a live entry, (False, None) when it must be fetched."""
        entry = self._entries.get(key)
        if entry is not None and now - entry[1] < self.ttl:
            self.hits += 1
            return True, entry[0]
        self.misses += 1
        return False, None

    def store(self, key: RecordKey, timestamp: Optional[int], now: float) -> None:
        """Remember a fetched timestamp, or that no record was found (None)."""
        self._entries[key] = (timestamp, now)

    def maybe_sweep(self, now: float) -> int:
        """Drop expired entries every 2 x ttl; returns how many were dropped."""
        if self._last_sweep is None:
            self._last_sweep = now
        if now - self._last_sweep < 2 * self.ttl:
            return 0
        self._last_sweep = now
        expired = [k for k, (_, at) in self._entries.items() if now - at >= self.ttl]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def stats(self) -> CacheStats:
        """Current figures, for the exporter's own metrics."""
        return CacheStats(len(self._entries), self.hits, self.misses, self.fetch_errors)


def batches_by_leader(data: ClusterData, keys: Iterable[RecordKey]) -> List[List[FetchItem]]:
    """Group wanted records by the broker leading their partition, in a stable order."""
    by_leader: Dict[int, List[FetchItem]] = defaultdict(list)
    for key in sorted(keys):
        tp = (key[0], key[1])
        by_leader[data.leaders.get(tp, -1)].append((key, data.latest[tp]))
    return [by_leader[leader] for leader in sorted(by_leader)]


class TimestampSampler:
    """Finds the timestamps a cycle needs, from the cache or from Kafka."""

    def __init__(self, cache: TimestampCache, fetch: FetchBatch, max_concurrent: int) -> None:
        self.cache = cache
        self._fetch = fetch
        self._limit = defer.DeferredSemaphore(max_concurrent)

    @defer.inlineCallbacks
    def sample(self, data: ClusterData, now: float):  # type: ignore[no-untyped-def]
        """Deferred firing with key -> timestamp for every record the cycle needs.

        Keys whose fetch failed are absent: their time lag is unknown this cycle.
        """
        self.cache.maybe_sweep(now)
        found: Dict[RecordKey, Optional[int]] = {}
        missing: List[RecordKey] = []
        for key in timestamp_requests(data):
            hit, value = self.cache.lookup(key, now)
            if hit:
                found[key] = value
            else:
                missing.append(key)
        calls = [
            self._limit.run(self._fetch, batch)
            for batch in batches_by_leader(data, missing)
        ]
        results = yield defer.DeferredList(calls, consumeErrors=True)
        for ok, result in results:
            if not ok:
                self.cache.fetch_errors += 1
                log.warn("timestamp fetch failed: {error}", error=describe_error(result.value))
                continue
            for key, value in result.items():
                self.cache.store(key, value, now)
                found[key] = value
        return found
