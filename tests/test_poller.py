"""Clock-driven tests of one cluster's poll loop, with a fake Kafka edge."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from klag_collector import metrics
from klag_collector.model import ClusterData, GroupInfo
from klag_collector.poller import MAX_REASONS_TOLD, STOP_GRACE, ClusterPoller, ClusterState
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

    def fail_reads(self) -> None:
        self.source.error = ConnectionError("broker down")

    def failure_messages(self) -> list:
        """The poller's lines above debug logged while the test runs, as (level, text)."""
        messages: list = []

        def observe(event: dict) -> None:
            if (event.get("log_namespace") == "klag_collector.poller.ClusterPoller"
                    and event["log_level"] is not LogLevel.debug):
                messages.append((event["log_level"].name, formatEvent(event)))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return messages


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

    def test_a_serving_snapshot_keeps_its_rows_once_in_its_families(self) -> None:
        """Served, the lag view's partition rows are dropped once the families hold them;
        the families are the same as a snapshot keeping its rows has."""
        kept = self.make()
        kept.poll_now()
        _, (served,) = pollers_on_clock(CONFIG, {"c1": self.source}, self.clock, keep_rows=False)
        served.poll_now()
        assert kept.snapshot is not None and served.snapshot is not None
        self.assertEqual(len(kept.snapshot.view.partitions), 2)
        self.assertEqual(served.snapshot.view.partitions, ())
        self.assertEqual(served.snapshot.view.groups, kept.snapshot.view.groups)
        self.assertEqual(served.snapshot.families, kept.snapshot.families)
        lag = served.snapshot.families[metrics.GROUP_LAG.name]
        self.assertEqual(list(lag.values), [5.0, 5.0])

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
        self.assertEqual(self.source.fetches, [[(("t", 0, 5), 10, 1)]])
        self.clock.advance(10)
        self.assertEqual(len(self.source.fetches), 1)
        self.assertEqual(p.health.cache.hits, 1)
        self.assertEqual(p.health.cache.misses, 1)
        self.source.data = lagging_data(committed=6)
        self.source.timestamps[("t", 0, 6)] = int((T0 - 50) * 1000)
        self.clock.advance(10)
        self.assertEqual(self.source.fetches[-1], [(("t", 0, 6), 10, 1)], "a moved offset is refetched")
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
    def test_failures_back_off_exponentially_and_success_resets(self) -> None:
        """Retries wait 1, 2, 4, 8 s, then the 10 s poll interval; a success goes back to the ticks."""
        self.fail_reads()
        p = self.make()
        p.startService()
        for delay in (1, 2, 4, 8, 10, 10):
            before = len(self.source.reads)
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.source.reads), before)
            self.clock.advance(0.01)
            self.assertEqual(len(self.source.reads), before + 1)
        self.assertEqual(p.health.consecutive_failures, 7)
        self.assertEqual(p.health.failures_total, 7)
        self.assertEqual(p.health.last_error, "ConnectionError: broker down")
        self.assertEqual(p.next_attempt_in(self.clock.seconds()), 10.0)
        self.source.error = None
        self.clock.advance(10)
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
        self.clock.advance(10)  # fails; retries back off 1, 2, 4, 8, then every 10
        changes = self.changes
        self.clock.advance(20)
        self.assertTrue(p.is_fresh(T0 + 30))
        self.clock.advance(0.01)
        self.assertFalse(p.is_fresh(self.clock.seconds()))
        self.assertEqual(p.state(self.clock.seconds()), ClusterState.STALE)
        self.assertGreater(self.changes, changes)
        self.flushLoggedErrors()
        self.stop()

    def test_a_started_poller_says_when_it_retries(self) -> None:
        """A failed cycle of the running loop names its reason, the first wait and the cap."""
        messages = self.failure_messages()
        self.fail_reads()
        p = self.make()
        p.startService()
        self.assertEqual(messages, [("error", "cluster c1: collection failed (ConnectionError: "
                                              "broker down); retry in 1.0s, backing off to every 10s")])
        self.stop()

    def test_a_one_shot_failure_schedules_and_announces_no_retry(self) -> None:
        """poll_now on a poller not started (collect_once) fails without a next attempt."""
        messages = self.failure_messages()
        self.fail_reads()
        p = self.make()
        self.successResultOf(p.poll_now())
        self.assertEqual(messages, [("error", "cluster c1: collection failed (ConnectionError: "
                                              "broker down)")])
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


POLL_2S = CONFIG.replace('poll_interval = "10s"', 'poll_interval = "2s"')


class OutageLogTests(PollerTestCase):
    """What an outage writes to the log: one line when a cluster starts failing, with the
    reason, one when it recovers, with how long it took; nothing per cycle above debug."""

    def kafka(self, down: float, up: float) -> None:
        """The fake Kafka fails reads from T0 + `down` to T0 + `up`."""
        self.clock.callLater(down, setattr, self.source, "error", ConnectionError("broker down"))
        self.clock.callLater(up, setattr, self.source, "error", None)

    def test_ten_minutes_down_is_two_lines_and_data_back_within_2s(self) -> None:
        """2 s poll, Kafka away from +9.5 to +609.5: the tick at +10 fails (one line), 300
        retries follow every 2 s (no line), the retry at +611 succeeds (one line, 601 s)."""
        messages = self.failure_messages()
        self.kafka(9.5, 609.5)
        p = self.make(config=POLL_2S)
        p.startService()
        self.clock.pump([0.5] * 1222)  # to +611
        self.assertEqual(messages, [
            ("error", "cluster c1: collection failed (ConnectionError: broker down); "
                      "retry in 1.0s, backing off to every 2s"),
            ("info", "cluster c1: collection recovered after 601.0s (301 failed cycles)"),
        ])
        self.assertEqual(p.health.last_success, T0 + 611)
        self.assertEqual(p.health.failures_total, 301)
        outage = [t - T0 for t in self.source.reads if T0 + 9.5 <= t < T0 + 609.5]
        self.assertEqual(len(outage), 301, "one attempt per 2 s interval, after the first retry")
        self.stop()

    def test_each_transition_is_one_line_with_its_own_reason_and_duration(self) -> None:
        """Failing, recovered, failing (another reason), recovered: four lines, exact figures."""
        messages = self.failure_messages()
        self.kafka(5, 12.5)  # tick at +10 fails; retries +11 and +13: back at +13
        self.clock.callLater(25, setattr, self.source, "error", TimeoutError("no answer"))
        self.clock.callLater(35.5, setattr, self.source, "error", None)
        p = self.make()
        p.startService()
        self.clock.pump([0.5] * 80)  # to +40; fails at +30, +31, +33; back at +37
        self.assertEqual(messages, [
            ("error", "cluster c1: collection failed (ConnectionError: broker down); "
                      "retry in 1.0s, backing off to every 10s"),
            ("info", "cluster c1: collection recovered after 3.0s (2 failed cycles)"),
            ("error", "cluster c1: collection failed (TimeoutError: no answer); "
                      "retry in 1.0s, backing off to every 10s"),
            ("info", "cluster c1: collection recovered after 7.0s (3 failed cycles)"),
        ])
        self.stop()

    def test_a_new_reason_is_told_once_however_reasons_alternate(self) -> None:
        """Broker down, then timeouts, then down again, alternating: the first failure and the
        first timeout are told, nothing after; /ready follows the last failure."""
        messages = self.failure_messages()
        p = self.make()
        p.startService()
        self.fail_reads()
        self.clock.advance(10)
        for error in (TimeoutError("no answer"), ConnectionError("broker down")) * 3:
            self.source.error = error
            self.clock.advance(p.next_attempt_in(self.clock.seconds()))
        self.assertEqual(p.health.consecutive_failures, 7)
        self.assertEqual(p.health.last_error, "ConnectionError: broker down")
        self.assertEqual(messages, [
            ("error", "cluster c1: collection failed (ConnectionError: broker down); "
                      "retry in 1.0s, backing off to every 10s"),
            ("error", "cluster c1: collection failed (TimeoutError: no answer), a new reason "
                      "after 1.0s of failing"),
        ])
        self.stop()

    def test_ever_new_reasons_are_told_up_to_a_bound(self) -> None:
        """An edge failing with a new text every cycle: MAX_REASONS_TOLD lines, then quiet."""
        messages = self.failure_messages()
        p = self.make()
        for n in range(20):
            self.source.error = ConnectionError(f"broker down, attempt {n}")
            self.successResultOf(p.poll_now())
        self.assertEqual(len(messages), MAX_REASONS_TOLD)
        self.assertEqual(messages[-1], ("error", "cluster c1: collection failed (ConnectionError: "
                                                 "broker down, attempt 7), a new reason after "
                                                 "0.0s of failing"))

    def test_at_debug_each_further_failure_is_told(self) -> None:
        """Below info each failed cycle after the first says its reason and the count."""
        debug: list = []

        def observe(event: dict) -> None:
            if event["log_level"] is LogLevel.debug and "cluster c1" in formatEvent(event):
                debug.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.fail_reads()
        self.make().startService()
        self.clock.pump([1, 2])
        self.assertEqual(debug, [
            "cluster c1: still failing (ConnectionError: broker down), 2 cycles in a row",
            "cluster c1: still failing (ConnectionError: broker down), 3 cycles in a row",
        ])
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


SLOW_CONFIG = CONFIG.replace('kafka_timeout = "5s"', 'kafka_timeout = "60s"')


class TimestampStepTests(PollerTestCase):
    """The timestamp step has a deadline of its own: what the read brought is still reported."""

    def release_all(self, held: HeldRunner) -> None:
        while held.pending:
            held.release()

    def test_a_fetch_past_the_deadline_leaves_time_lag_unknown_and_the_cycle_succeeds(self) -> None:
        """The fetch hangs: at kafka_timeout (5 s) it is given up, the clients are closed (so
        its thread comes back), and the snapshot has the offset lag, time lag unknown."""
        held = HeldRunner()
        p = self.make(held)
        p.startService()
        held.release()  # the read
        held.release()  # the timestamp plan
        self.assertEqual([f.__name__ for _, f, _ in held.pending], ["fetch_timestamps"])
        self.clock.advance(4.99)
        self.assertEqual([f.__name__ for _, f, _ in held.pending], ["fetch_timestamps"])
        self.clock.advance(0.01)
        self.assertEqual([f.__name__ for _, f, _ in held.pending],
                         ["fetch_timestamps", "reset", "merge"])
        self.release_all(held)
        self.flushLoggedErrors()
        rows = p.snapshot.view.partitions
        self.assertEqual([(r.group, r.lag, r.lag_seconds) for r in rows],
                         [("g1", 5, None), ("g2", 5, None)])
        self.assertEqual(p.snapshot.view.skipped, {"timestamp_unavailable": 2})
        self.assertEqual(p.snapshot.taken_at, T0 + 5)
        self.assertEqual((p.health.consecutive_failures, p.health.failures_total), (0, 0))
        self.assertEqual(p.health.last_success, T0 + 5)
        self.assertEqual(p.health.cache.fetch_errors, 1)
        self.assertEqual(self.source.resets, 1)
        self.stop()

    def test_a_batch_due_after_the_deadline_asks_nothing(self) -> None:
        """One fetch at a time, two leaders: the first hangs past the deadline, the second is
        never sent; both partitions keep their offset lag, their time lag unknown."""
        tps = [("t", 0), ("t", 1)]
        self.source.data = ClusterData(
            groups={"g1": GroupInfo("g1", "Empty")},
            committed={"g1": {tp: 5 for tp in tps}},
            earliest={tp: 0 for tp in tps},
            latest={tp: 10 for tp in tps},
            leaders={("t", 0): 1, ("t", 1): 2},
        )
        held = HeldRunner()
        p = self.make(held, config=CONFIG.replace("max_concurrent_fetches = 2",
                                                  "max_concurrent_fetches = 1"))
        p.startService()
        held.release()  # the read
        held.release()  # the timestamp plan
        self.assertEqual([args for _, _, args in held.pending], [([(("t", 0, 5), 10, 1)],)])
        self.clock.advance(5)
        self.release_all(held)
        self.flushLoggedErrors()
        self.assertEqual(self.source.fetches, [[(("t", 0, 5), 10, 1)]], "t/1 was never asked")
        self.assertEqual([(r.partition, r.lag, r.lag_seconds) for r in p.snapshot.view.partitions],
                         [(0, 5, None), (1, 5, None)])
        self.assertEqual(p.snapshot.view.skipped, {"timestamp_unavailable": 2})
        self.assertEqual(p.health.cache.fetch_errors, 1, "only the batch sent can fail")
        self.stop()

    def test_a_failing_timestamp_step_still_gives_a_snapshot(self) -> None:
        """The step itself breaks (here its plan): one warning, the offsets are reported."""
        messages = self.failure_messages()
        p = self.make()

        def broken(data: Any, now: float) -> Any:
            raise RuntimeError("plan broke")

        p.sampler.plan = broken  # type: ignore[union-attr, method-assign]
        p.startService()
        self.assertEqual(messages, [("warn", "cluster c1: timestamps not read (RuntimeError: "
                                             "plan broke); time lag unknown this cycle")])
        self.assertEqual([(r.lag, r.lag_seconds) for r in p.snapshot.view.partitions],
                         [(5, None), (5, None)])
        self.assertEqual(p.snapshot.view.skipped, {"timestamp_unavailable": 2})
        self.assertEqual(p.health.consecutive_failures, 0)
        self.assertEqual(self.source.fetches, [])
        self.stop()


class SlowCycleTests(PollerTestCase):
    """A cycle longer than staleness_threshold (30 s) says so once, naming its slowest step."""

    def test_a_slow_fetch_is_named(self) -> None:
        """Read 2 s, fetch 29 s: 31 s in all, one line naming the timestamp step; the ticks at
        +10, +20 and +30 are skipped, and the cycle still succeeds."""
        messages = self.failure_messages()
        held = HeldRunner()
        p = self.make(held, config=SLOW_CONFIG)
        p.startService()
        self.clock.advance(2)
        held.release()  # the read
        held.release()  # the timestamp plan
        self.clock.advance(29)
        while held.pending:
            held.release()  # the fetch, the merge, the snapshot
        self.assertEqual(messages, [
            ("warn", "cluster c1: cycle took 31.0s, longer than staleness_threshold 30s; most "
                     "in fetching timestamps (29.0s)"),
        ])
        self.assertEqual(p.health.skipped_ticks, 3)
        self.assertEqual(p.health.last_duration, 31.0)
        self.assertEqual(p.snapshot.view.partitions[0].lag_seconds, 131.0)
        self.stop()

    def test_a_cycle_of_exactly_the_threshold_says_nothing(self) -> None:
        """30 s is not longer than 30 s: no line."""
        messages = self.failure_messages()
        held = HeldRunner()
        p = self.make(held, config=SLOW_CONFIG)
        p.startService()
        self.clock.advance(30)
        while held.pending:
            held.release()
        self.assertEqual(messages, [])
        self.assertEqual(p.health.last_duration, 30.0)
        self.stop()

    def test_a_read_that_times_out_after_the_threshold_is_named(self) -> None:
        """kafka_timeout 60 s > staleness 30 s: the timed-out read is the slow step; the failure
        has its own line, as always."""
        messages = self.failure_messages()
        held = HeldRunner()
        p = self.make(held, config=SLOW_CONFIG)
        p.startService()
        self.clock.advance(60)
        self.assertEqual(messages, [
            ("warn", "cluster c1: cycle took 60.0s, longer than staleness_threshold 30s; most "
                     "in reading groups and offsets (60.0s)"),
            ("error", "cluster c1: collection failed (timed out); retry in 1.0s, backing off "
                      "to every 10s"),
        ])
        held.pending.clear()
        self.stop()


class StopDeadlineTests(PollerTestCase):
    def test_stop_closes_the_clients_while_the_read_still_runs(self) -> None:
        """The reset is asked at once, behind the running read; the read then ends the cycle
        without a failure, a fetch or a snapshot."""
        messages = self.failure_messages()
        held = HeldRunner()
        p = self.make(held)
        p.startService()
        stopped = p.stopService()
        self.assertEqual([f.__name__ for _, f, _ in held.pending], ["read", "reset"])
        held.release()  # the read answers, late: the cycle ends before its next step
        self.assertNoResult(stopped)
        held.release()  # the reset
        self.successResultOf(stopped)
        self.assertEqual(held.pending, [])
        self.assertEqual((self.source.resets, self.source.fetches, p.snapshot), (1, [], None))
        self.assertEqual((p.health.consecutive_failures, p.health.failures_total), (0, 0))
        self.assertEqual(messages, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_gives_up_on_a_cycle_that_never_ends_after_three_graces(self) -> None:
        """Nothing answers (not even the reset): the stop resets, waits STOP_GRACE for the
        cycle, resets again, and fires after 3 x STOP_GRACE, with one warning."""
        messages = self.failure_messages()
        held = HeldRunner()
        p = self.make(held, config=SLOW_CONFIG)
        p.startService()
        stopped = p.stopService()
        self.clock.pump([STOP_GRACE, STOP_GRACE, STOP_GRACE - 0.01])
        self.assertNoResult(stopped)
        self.clock.advance(0.01)
        self.successResultOf(stopped)
        self.assertEqual([f.__name__ for _, f, _ in held.pending], ["read", "reset", "reset"])
        self.assertEqual(messages, [("warn", "cluster c1: cycle still running at stop; closing "
                                             "its clients again")])
        self.clock.advance(57)  # the read's own timeout ends the cycle: no failure is told
        self.assertEqual(messages[1:], [
            ("warn", "cluster c1: cycle took 60.0s, longer than staleness_threshold 30s; most "
                     "in reading groups and offsets (60.0s)"),
        ])
        self.assertEqual(p.health.failures_total, 0)
        held.pending.clear()
        self.assertEqual(self.clock.getDelayedCalls(), [])
