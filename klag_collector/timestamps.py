"""Record timestamps for time lag: a cache, and a sampler that batches fetches per leader.

The cache is plain data with `now` passed in. The sampler asks the Kafka edge for the
records the cache lacks, one batched fetch per leader broker, at most
`max_concurrent_fetches` at a time.

Every step that grows with the number of rows (what to ask, the cache, sorting by
leader, merging the answers) runs in a worker thread; the reactor only starts the
batch fetches and joins them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, Iterable, List, Mapping, NamedTuple, Optional

from twisted.internet import defer
from twisted.logger import Logger

from .errors import describe_error
from .lag import timestamp_requests
from .record_age import RecordTime, Timestamps
from .model import CacheStats, ClusterData, RecordKey

log = Logger()

# Runs a blocking callable off the reactor thread and returns a Deferred of its result.
RunInThread = Callable[..., "defer.Deferred[Any]"]


class FetchItem(NamedTuple):
    """One record to read, with its partition's end offset, so that the fetcher can
    tell "no record there" from "not fetched yet", and the broker leading it (-1: none)."""

    key: RecordKey
    end_offset: int
    leader: int


# Runs the blocking fetch of one batch; answers key -> timestamp (or None, or a
# record_age.CaughtUp) for the keys it could read.
FetchBatch = Callable[[List[FetchItem]], "defer.Deferred[Mapping[RecordKey, RecordTime]]"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached answer and when it came: the record's timestamp, None (no time to date it by),
    or a `record_age.CaughtUp` (only transaction markers or aborted records up to the end)."""

    timestamp: RecordTime
    stored_at: float


class TimestampCache:
    """Timestamps keyed by (topic, partition, offset).

    The timestamp of the record at an offset never changes while the record exists, so a
    record's time stays valid for as long as some group sits at that offset: it is never
    fetched again. `ttl` bounds the rest: how long an entry no cycle asks for is kept, how
    long a "no time" (None) or "caught up" answer is believed before it is asked again (the
    partition moves on), and how often an entry on a compacted topic is re-checked
    (compaction may remove the record, and the first one after it is another).

    Not locked: only its poller's cycles use it, one cycle at a time, and a cycle's
    sampler calls it from one worker-thread step after the other.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: Dict[RecordKey, CacheEntry] = {}
        # key -> when a cycle last asked for it
        self._used: Dict[RecordKey, float] = {}
        self._last_sweep: Optional[float] = None
        self.hits = 0
        self.misses = 0
        self.fetch_errors = 0

    def lookup(self, key: RecordKey, now: float, compacted: bool = False) -> Optional[CacheEntry]:
        """The valid entry for `key`, or None when it must be fetched."""
        entry = self._entries.get(key)
        if entry is not None and not self._expired(entry, now, compacted):
            self.hits += 1
            self._used[key] = now
            return entry
        self.misses += 1
        return None

    def _expired(self, entry: CacheEntry, now: float, compacted: bool) -> bool:
        lasting = isinstance(entry.timestamp, int) and not compacted
        return not lasting and now - entry.stored_at >= self.ttl

    def store(self, key: RecordKey, timestamp: RecordTime, now: float) -> None:
        """Remember a fetched answer: a timestamp, None, or a CaughtUp."""
        self._entries[key] = CacheEntry(timestamp, now)
        self._used[key] = now

    def maybe_sweep(self, now: float) -> int:
        """Every ttl, drop the entries no cycle asked for in a ttl; returns how many."""
        if self._last_sweep is None:
            self._last_sweep = now
        if now - self._last_sweep < self.ttl:
            return 0
        self._last_sweep = now
        unused = [k for k, used in self._used.items() if now - used >= self.ttl]
        for key in unused:
            del self._entries[key]
            del self._used[key]
        return len(unused)

    def stats(self) -> CacheStats:
        """Current figures, for the exporter's own metrics."""
        return CacheStats(len(self._entries), self.hits, self.misses, self.fetch_errors)


def batches_by_leader(data: ClusterData, keys: Iterable[RecordKey]) -> List[List[FetchItem]]:
    """Group wanted records by the broker leading their partition, in a stable order."""
    by_leader: Dict[int, List[FetchItem]] = defaultdict(list)
    for key in sorted(keys):
        tp = (key[0], key[1])
        leader = data.leaders.get(tp, -1)
        by_leader[leader].append(FetchItem(key, data.latest[tp], leader))
    return [by_leader[leader] for leader in sorted(by_leader)]


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What a cycle needs: the timestamps the cache answered and the batches to fetch."""

    cached: Timestamps
    batches: List[List[FetchItem]]
    planned_at: float  # the cycle's `now`: fetched entries are stored as of then


@dataclass(frozen=True, slots=True)
class Fetched:
    """The answers of a plan's batches; a failed batch's keys are in none of them."""

    answers: List[Mapping[RecordKey, RecordTime]]
    failed_batches: int


@dataclass(frozen=True, slots=True)
class Sample:
    """A cycle's timestamps and the cache's figures once they were found."""

    timestamps: Timestamps
    cache: CacheStats


class TimestampSampler:
    """Finds the timestamps a cycle needs, from the cache or from Kafka."""

    def __init__(
        self,
        cache: TimestampCache,
        fetch: FetchBatch,
        max_concurrent: int,
        run_in_thread: RunInThread,
    ) -> None:
        self.cache = cache
        self._fetch = fetch
        self._limit = defer.DeferredSemaphore(max_concurrent)
        self._run = run_in_thread

    @defer.inlineCallbacks
    def sample(
        self, data: ClusterData, now: float
    ) -> Generator["defer.Deferred[Any]", Any, Sample]:
        """Deferred firing with the timestamps of every record the cycle needs.

        Keys whose fetch failed are absent: their time lag is unknown this cycle.
        """
        plan: FetchPlan = yield self._run(self.plan, data, now)
        fetched = yield self._fetch_all(plan.batches)
        sample: Sample = yield self._run(self.merge, plan, fetched)
        return sample

    def plan(self, data: ClusterData, now: float) -> FetchPlan:
        """In a worker thread: read the cache, and batch by leader what it lacks."""
        cached: Dict[RecordKey, RecordTime] = {}
        missing: List[RecordKey] = []
        compacted = data.compacted_topics
        for key in timestamp_requests(data):
            entry = self.cache.lookup(key, now, key[0] in compacted)
            if entry is None:
                missing.append(key)
            else:
                cached[key] = entry.timestamp
        # After the look-ups, which mark what this cycle still asks for.
        self.cache.maybe_sweep(now)
        return FetchPlan(cached, batches_by_leader(data, missing), now)

    @defer.inlineCallbacks
    def _fetch_all(
        self, batches: List[List[FetchItem]]
    ) -> Generator["defer.Deferred[Any]", Any, Fetched]:
        # On the reactor: per batch (per leader broker), never per record.
        calls = [self._limit.run(self._fetch, batch) for batch in batches]
        results = yield defer.DeferredList(calls, consumeErrors=True)
        answers: List[Mapping[RecordKey, RecordTime]] = []
        failed = 0
        for ok, result in results:
            if ok:
                answers.append(result)
            else:
                failed += 1
                log.warn("timestamp fetch failed: {error}", error=describe_error(result.value))
        return Fetched(answers, failed)

    def merge(self, plan: FetchPlan, fetched: Fetched) -> Sample:
        """In a worker thread: cache the answers and add them to what the cache had."""
        self.cache.fetch_errors += fetched.failed_batches
        found = dict(plan.cached)
        for answer in fetched.answers:
            for key, timestamp in answer.items():
                self.cache.store(key, timestamp, plan.planned_at)
                found[key] = timestamp
        return Sample(found, self.cache.stats())
