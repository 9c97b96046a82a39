"""The record-timestamp cache and the sampler that batches fetches per leader broker."""

from __future__ import annotations

from typing import Any, List, Mapping

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from klag_collector.record_age import CaughtUp
from klag_collector.model import CacheStats, ClusterData, GroupInfo
from klag_collector.timestamps import (
    CacheEntry,
    FetchItem,
    TimestampCache,
    TimestampSampler,
    batches_by_leader,
)
from fakes import HeldRunner, run_now


def data_on_leaders() -> ClusterData:
    """Four lagging partitions: two led by broker 1, one by broker 2, one leaderless."""
    tps = [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    return ClusterData(
        groups={"g": GroupInfo("g", "Empty")},
        committed={"g": {tp: 3 for tp in tps}},
        earliest={tp: 0 for tp in tps},
        latest={tp: 10 for tp in tps},
        leaders={("a", 0): 1, ("a", 1): 1, ("b", 0): 2},
    )


class CacheTests(SynchronousTestCase):
    def test_a_record_time_is_never_fetched_again_while_asked_for(self) -> None:
        """A record's timestamp never changes: it answers past the ttl, as long as it is used."""
        cache = TimestampCache(ttl=60)
        cache.store(("t", 0, 5), 1234, now=100)
        for now in (159.9, 160, 219, 278):
            self.assertEqual(cache.lookup(("t", 0, 5), now=now), CacheEntry(1234, stored_at=100))
        self.assertEqual((cache.hits, cache.misses), (4, 0))

    def test_on_a_compacted_topic_a_record_time_is_rechecked_every_ttl(self) -> None:
        """Compaction may remove the record: the first record after the offset is another."""
        cache = TimestampCache(ttl=60)
        cache.store(("t", 0, 5), 1234, now=100)
        self.assertEqual(cache.lookup(("t", 0, 5), 159.9, compacted=True),
                         CacheEntry(1234, stored_at=100))
        self.assertIsNone(cache.lookup(("t", 0, 5), 160, compacted=True))

    def test_a_no_record_miss_is_cached_for_one_ttl(self) -> None:
        """'No record there' (None) is remembered for one TTL, then asked again."""
        cache = TimestampCache(ttl=30)
        cache.store(("t", 0, 9), None, now=0)
        self.assertEqual(cache.lookup(("t", 0, 9), now=29), CacheEntry(None, stored_at=0))
        self.assertIsNone(cache.lookup(("t", 0, 9), now=30))

    def test_a_caught_up_answer_is_cached_as_itself_for_one_ttl(self) -> None:
        """A CaughtUp answer keeps its type in the cache, and is asked again after the TTL."""
        cache = TimestampCache(ttl=30)
        cache.store(("t", 0, 9), CaughtUp(10), now=0)
        entry = cache.lookup(("t", 0, 9), now=29)
        assert entry is not None
        self.assertIsInstance(entry.timestamp, CaughtUp)
        self.assertIsNone(cache.lookup(("t", 0, 9), now=30))

    def test_sweep_runs_every_ttl_and_drops_only_entries_nobody_asked_for(self) -> None:
        """The sweep runs once a ttl and drops the entries unused for a ttl, however old
        the others are."""
        cache = TimestampCache(ttl=10)
        self.assertEqual(cache.maybe_sweep(now=0), 0)
        cache.store(("t", 0, 1), 1, now=0)
        cache.store(("t", 0, 2), 2, now=0)
        cache.lookup(("t", 0, 2), now=5)
        self.assertEqual(cache.maybe_sweep(now=9.9), 0)
        self.assertEqual(cache.stats().entries, 2)
        self.assertEqual(cache.maybe_sweep(now=10), 1)
        self.assertEqual(cache.stats().entries, 1)
        self.assertEqual(cache.lookup(("t", 0, 2), now=14), CacheEntry(2, stored_at=0))
        self.assertEqual(cache.maybe_sweep(now=20), 0, "asked for at 14: kept")
        self.assertEqual(cache.maybe_sweep(now=30), 1)
        self.assertEqual(cache.stats().entries, 0)

    def test_stats_report_entries_hits_misses_errors(self) -> None:
        """stats() carries the figures the exporter publishes."""
        cache = TimestampCache(ttl=10)
        cache.store(("t", 0, 1), 1, now=0)
        cache.lookup(("t", 0, 1), now=1)
        cache.lookup(("t", 0, 2), now=1)
        cache.fetch_errors += 1
        stats = cache.stats()
        self.assertEqual((stats.entries, stats.hits, stats.misses, stats.fetch_errors), (1, 1, 1, 1))


class SamplerTests(SynchronousTestCase):
    def test_batches_group_partitions_by_leader(self) -> None:
        """One batch per leader broker, each item with its partition's end offset."""
        data = data_on_leaders()
        keys = [("a", 0, 3), ("a", 1, 3), ("b", 0, 3), ("c", 0, 3)]
        self.assertEqual(
            batches_by_leader(data, keys),
            [[(("c", 0, 3), 10, -1)], [(("a", 0, 3), 10, 1), (("a", 1, 3), 10, 1)],
             [(("b", 0, 3), 10, 2)]],
        )
        self.assertEqual(batches_by_leader(data, [("b", 0, 3)])[0][0],
                         FetchItem(key=("b", 0, 3), end_offset=10, leader=2))

    def test_concurrent_fetches_are_bounded(self) -> None:
        """No more than max_concurrent fetches are in flight at once."""
        calls: List[defer.Deferred[Mapping[Any, Any]]] = []
        batches: List[List[Any]] = []

        def fetch(batch: List[Any]) -> "defer.Deferred[Mapping[Any, Any]]":
            d: defer.Deferred[Mapping[Any, Any]] = defer.Deferred()
            calls.append(d)
            batches.append(batch)
            return d

        sampler = TimestampSampler(TimestampCache(60), fetch, 2, run_in_thread=run_now)
        result = sampler.sample(data_on_leaders(), now=0)
        self.assertEqual(len(calls), 2)
        calls[0].callback({item.key: 7 for item in batches[0]})
        self.assertEqual(len(calls), 3)
        calls[1].callback({item.key: 8 for item in batches[1]})
        calls[2].callback({item.key: 9 for item in batches[2]})
        found = self.successResultOf(result).timestamps
        self.assertEqual(found, {("c", 0, 3): 7, ("a", 0, 3): 8, ("a", 1, 3): 8, ("b", 0, 3): 9})

    def test_cached_keys_are_not_fetched_again(self) -> None:
        """A steady cycle (no committed offset moved) fetches nothing, whatever the ttl; a
        "no time" answer is asked again once the ttl has passed."""
        fetched: List[List[Any]] = []

        def fetch(batch: List[Any]) -> "defer.Deferred[Mapping[Any, Any]]":
            fetched.append(batch)
            return defer.succeed({item.key: 5 for item in batch})

        sampler = TimestampSampler(TimestampCache(60), fetch, 10, run_in_thread=run_now)
        first = self.successResultOf(sampler.sample(data_on_leaders(), now=0)).timestamps
        for now in (59, 60, 600):
            later = self.successResultOf(sampler.sample(data_on_leaders(), now=now)).timestamps
            self.assertEqual(later, first)
        self.assertEqual(len(fetched), 3)
        sampler.cache.store(("a", 0, 3), None, now=600)
        self.successResultOf(sampler.sample(data_on_leaders(), now=660))
        self.assertEqual(fetched[3:], [[(("a", 0, 3), 10, 1)]])

    def test_failed_batch_leaves_its_keys_unknown(self) -> None:
        """A failed fetch is counted and its keys stay absent (unknown), the others are kept."""
        def fetch(batch: List[Any]) -> "defer.Deferred[Mapping[Any, Any]]":
            if batch[0][0][0] == "b":
                return defer.fail(RuntimeError("leader 2 down"))
            return defer.succeed({item.key: 1 for item in batch})

        cache = TimestampCache(60)
        sampler = TimestampSampler(cache, fetch, 10, run_in_thread=run_now)
        found = self.successResultOf(sampler.sample(data_on_leaders(), 0)).timestamps
        self.assertEqual(set(found), {("a", 0, 3), ("a", 1, 3), ("c", 0, 3)})
        self.assertEqual(cache.fetch_errors, 1)
        self.assertIsNone(cache.lookup(("b", 0, 3), now=1))

    def test_the_cache_is_used_in_worker_steps_only(self) -> None:
        """Planning and merging go through run_in_thread; the fetches start in between."""
        held = HeldRunner()
        fetched: List[List[Any]] = []

        def fetch(batch: List[Any]) -> "defer.Deferred[Mapping[Any, Any]]":
            fetched.append(batch)
            return defer.succeed({item.key: 5 for item in batch})

        cache = TimestampCache(60)
        sampler = TimestampSampler(cache, fetch, max_concurrent=10, run_in_thread=held)
        result = sampler.sample(data_on_leaders(), now=0)
        self.assertEqual([f for _, f, _ in held.pending], [sampler.plan])
        self.assertEqual(cache.misses, 0, "no look-up before the plan step runs")
        held.release()
        self.assertEqual(len(fetched), 3)
        self.assertEqual([f for _, f, _ in held.pending], [sampler.merge])
        self.assertEqual(cache.stats().entries, 0, "nothing stored before the merge step runs")
        held.release()
        sample = self.successResultOf(result)
        self.assertEqual(sample.cache, CacheStats(entries=4, hits=0, misses=4, fetch_errors=0))
        self.assertEqual(len(sample.timestamps), 4)
