"""Clock-driven tests of one cluster's poll loop, with a fake Kafka edge."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from klag_collector.model import ClusterData, GroupInfo
from klag_collector.poller import ClusterPoller, ClusterState
from fakes import FakeSource, HeldRunner, one_partition_data, pollers_on_clock, run_now

T0 = 1_700_000_000.0

CONFIG = """
[exporter]
poll_interval = "10s"
staleness_threshold = "30s"
granularity = "partition"
[exporter.timestamp_sampling]
cache_ttl = "60s"
max_concurrent_fetches = 2
[exporter.performance]
kafka_timeout = "5s"
[[clusters]]
name = "c1"
bootstrap_servers = "127.0.0.1:1"
"""


def lagging_data(committed: int = 5) -> ClusterData:
    """Two groups at the same offset of one partition, 5 behind the end."""
    return one_partition_data(GroupInfo("g1", "Empty"), GroupInfo("g2", "Stable", members=1),
                              committed=committed)


class PollerTestCase(SynchronousTestCase):
    """Builds a poller on a task.Clock and fails the test on leaked delayed calls."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.source = FakeSource(lagging_data(), {("t", 0, 5): int((T0 - 100) * 1000)})
        self.changes = 0

    def make(self, runner: Any = run_now, config: str = CONFIG, jitter: float = 0.0) -> ClusterPoller:
        def changed() -> None:
            self.changes += 1

        self.runner = runner
        _, (self.poller,) = pollers_on_clock(config, {"c1": self.source}, self.clock, runner,
                                             changed, jitter)
        return self.poller

    def stop(self) -> None:
        """Stop the poller and check that it left nothing scheduled."""
        stopped = self.poller.stopService()
        while isinstance(self.runner, HeldRunner) and self.runner.pending:
            self.runner.release()
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CycleTests(PollerTestCase):
    def test_first_cycle_runs_at_start(self) -> None:
        """Starting the service runs a cycle at once and publishes a fresh snapshot."""
        p = self.make()
        self.assertEqual(p.state(T0), ClusterState.STARTING)
        p.startService()
        self.assertEqual(self.source.reads, [T0])
        self.assertIsNotNone(p.snapshot)
        self.assertTrue(p.is_fresh(self.clock.seconds()))
        self.assertEqual(p.state(self.clock.seconds()), ClusterState.OK)
        self.assertEqual(p.health.last_success, T0)
        self.stop()

    def test_cycles_follow_the_poll_interval(self) -> None:
        """A cycle runs every poll_interval seconds."""
        p = self.make()
        p.startService()
        self.clock.pump([10, 10, 10])
        self.assertEqual(self.source.reads, [T0, T0 + 10, T0 + 20, T0 + 30])
        self.stop()

    def test_time_lag_uses_the_injected_clock(self) -> None:
        """lag_seconds is now minus the committed record's timestamp, from the clock."""
        p = self.make()
        p.startService()
        rows = p.snapshot.view.partitions
        self.assertEqual([(r.group, r.lag, r.lag_seconds) for r in rows], [("g1", 5, 100.0), ("g2", 5, 100.0)])
        self.stop()

    def test_a_tick_during_a_running_cycle_is_skipped_and_counted(self) -> None:
        """Overlapping cycles never pile up: the tick is skipped and counted."""
        held = HeldRunner()
        p = self.make(held, config=CONFIG.replace('kafka_timeout = "5s"', 'kafka_timeout = "60s"'))
        p.startService()
        self.clock.advance(10)
        self.assertEqual(p.health.skipped_ticks, 1)
        self.assertEqual(len(held.pending), 1)
        while held.pending:  # the read, the timestamp plan, fetch and merge, the snapshot build
            held.release()
        self.assertIsNotNone(p.snapshot)
        self.assertEqual(len(self.source.reads), 1)
        self.clock.advance(10)
        self.assertEqual(len(held.pending), 1, "the next tick starts a new cycle")
        while held.pending:
            held.release()
        self.stop()

    def test_shared_offset_is_fetched_once_and_then_cached(self) -> None:
        """Two groups at one offset share a fetch; the next cycle hits the cache."""
        p = self.make()
        p.startService()
        self.assertEqual(self.source.fetches, [[(("t", 0, 5), 10)]])
        self.clock.advance(10)
        self.assertEqual(len(self.source.fetches), 1)
        self.assertEqual(p.health.cache.hits, 1)
        self.assertEqual(p.health.cache.misses, 1)
        self.source.data = lagging_data(committed=6)
        self.source.timestamps[("t", 0, 6)] = int((T0 - 50) * 1000)
        self.clock.advance(10)
        self.assertEqual(self.source.fetches[-1], [(("t", 0, 6), 10)], "a moved offset is refetched")
        self.stop()

    def test_timestamp_fetch_failure_leaves_time_lag_out(self) -> None:
        """A failed fetch is counted; the lag is reported, its seconds are not (never 0)."""
        def broken(items: Any) -> Any:
            raise RuntimeError("fetch broke")

        self.source.fetch_timestamps = broken  # type: ignore[assignment]
        p = self.make()
        p.startService()
        rows = p.snapshot.view.partitions
        self.assertEqual([(r.lag, r.lag_seconds) for r in rows], [(5, None), (5, None)])
        self.assertEqual(p.snapshot.view.skipped, {"timestamp_unavailable": 2})
        self.assertEqual(p.health.cache.fetch_errors, 1)
        self.flushLoggedErrors()
        self.stop()

    def test_sampling_disabled_fetches_nothing(self) -> None:
        """With timestamp sampling off there is no fetch and no time lag."""
        p = self.make(config=CONFIG.replace('cache_ttl = "60s"', "enabled = false"))
        p.startService()
        self.assertEqual(self.source.fetches, [])
        self.assertEqual({r.lag_seconds for r in p.snapshot.view.partitions}, {None})
        self.assertEqual(p.snapshot.view.skipped, {})
        self.stop()


class FailureTests(PollerTestCase):
    def fail_reads(self) -> None:
        self.source.error = ConnectionError("broker down")

    def test_failures_back_off_exponentially_and_success_resets(self) -> None:
        """Retries wait 1, 2, 4, 8 s; a success goes back to the normal interval."""
        self.fail_reads()
        p = self.make()
        p.startService()
        for delay in (1, 2, 4, 8):
            before = len(self.source.reads)
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.source.reads), before)
            self.clock.advance(0.01)
            self.assertEqual(len(self.source.reads), before + 1)
        self.assertEqual(p.health.consecutive_failures, 5)
        self.assertEqual(p.health.failures_total, 5)
        self.assertEqual(p.health.last_error, "ConnectionError: broker down")
        self.source.error = None
        self.clock.advance(16)
        self.assertEqual(p.health.consecutive_failures, 0)
        self.assertEqual(p.state(self.clock.seconds()), ClusterState.OK)
        self.flushLoggedErrors()
        self.stop()

    def test_backoff_jitter_shortens_the_wait(self) -> None:
        """With jitter the first retry comes up to 20% early, never late."""
        self.fail_reads()
        p = self.make(jitter=0.5)
        p.startService()
        self.clock.advance(0.9)
        self.assertEqual(len(self.source.reads), 2)
        self.stop()

    def test_loop_survives_any_exception(self) -> None:
        """An unexpected exception fails the cycle, not the loop."""
        self.source.error = ZeroDivisionError("bug in the edge")
        p = self.make()
        p.startService()
        self.source.error = None
        self.clock.advance(1)
        self.assertIsNotNone(p.snapshot)
        self.assertTrue(p._loop.running)
        self.stop()

    def test_a_hung_kafka_call_times_out(self) -> None:
        """A read that never returns fails the cycle after kafka_timeout."""
        held = HeldRunner()
        p = self.make(held)
        p.startService()
        self.clock.advance(5)
        self.assertEqual(p.health.last_error, "timed out")
        self.assertEqual(p.state(self.clock.seconds()), ClusterState.FAILING)
        held.pending.clear()
        self.stop()

    def test_data_goes_stale_and_a_change_is_signalled_on_time(self) -> None:
        """Without success for staleness_threshold the cluster is stale, and listeners hear it."""
        p = self.make()
        p.startService()
        self.fail_reads()
        self.clock.advance(10)  # fails; retries back off 1, 2, 4, 8, 16...
        changes = self.changes
        self.clock.advance(20)
        self.assertTrue(p.is_fresh(T0 + 30))
        self.clock.advance(0.01)
        self.assertFalse(p.is_fresh(self.clock.seconds()))
        self.assertEqual(p.state(self.clock.seconds()), ClusterState.STALE)
        self.assertGreater(self.changes, changes)
        self.flushLoggedErrors()
        self.stop()

    def failure_messages(self) -> list:
        """The poller's error lines logged while the test runs."""
        messages: list = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "klag_collector.poller.ClusterPoller":
                messages.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return messages

    def test_a_started_poller_says_when_it_retries(self) -> None:
        """A failed cycle of the running loop names its reason and the backoff wait."""
        messages = self.failure_messages()
        self.fail_reads()
        p = self.make()
        p.startService()
        self.assertEqual(messages, ["cluster c1: collection failed (ConnectionError: broker down); "
                                    "retry in 1.0s"])
        self.stop()

    def test_a_one_shot_failure_schedules_and_announces_no_retry(self) -> None:
        """poll_now on a poller not started (collect_once) fails without a next attempt."""
        messages = self.failure_messages()
        self.fail_reads()
        p = self.make()
        self.successResultOf(p.poll_now())
        self.assertEqual(messages, ["cluster c1: collection failed (ConnectionError: broker down)"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(p.next_attempt_in(self.clock.seconds()))
        self.assertEqual(p.state(self.clock.seconds()), ClusterState.FAILING)

    def test_a_one_shot_success_leaves_nothing_scheduled(self) -> None:
        """poll_now on a poller not started: a snapshot, and no stale re-render to cancel."""
        p = self.make()
        self.assertTrue(self.successResultOf(p.poll_now()))
        self.assertIsNotNone(p.snapshot)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_next_attempt_is_reported(self) -> None:
        """next_attempt_in is the backoff wait while failing, the tick otherwise."""
        p = self.make()
        p.startService()
        self.assertEqual(p.next_attempt_in(self.clock.seconds()), 10.0)
        self.fail_reads()
        self.clock.advance(10)
        self.assertEqual(p.next_attempt_in(self.clock.seconds()), 1.0)
        self.stop()


class StopTests(PollerTestCase):
    def test_stop_waits_for_the_running_cycle(self) -> None:
        """stopService fires only after the in-flight cycle ends (bounded), then resets clients."""
        held = HeldRunner()
        p = self.make(held)
        p.startService()
        stopped = p.stopService()
        self.assertNoResult(stopped)
        while held.pending:
            held.release()
        self.successResultOf(stopped)
        self.assertEqual(self.source.resets, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
