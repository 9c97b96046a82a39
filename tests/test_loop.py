"""Clock-driven tests of SerialLoop: one run at a time, skipped ticks, backoff, stop."""

from __future__ import annotations

from typing import List, NamedTuple, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from klag_collector.backoff import backoff_delay
from klag_collector.loop import Backoff, RunEnd, SerialLoop, StepTimes


class Runs:
    """The callable under the loop: records when it was called; each run waits for the test
    (`held`) or ends at once with success or with `error`."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.started: List[float] = []
        self.held: List["defer.Deferred[str]"] = []
        self.hold = False
        self.error: Optional[Exception] = None

    def __call__(self) -> "defer.Deferred[str]":
        self.started.append(self.clock.seconds())
        if self.hold:
            d: "defer.Deferred[str]" = defer.Deferred()
            self.held.append(d)
            return d
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed(f"run {len(self.started)}")


class LoopTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.runs = Runs(self.clock)
        self.ends: List[RunEnd[str]] = []
        self.skip_totals: List[int] = []

    def make(self, interval: float = 10.0, backoff: Optional[Backoff] = None) -> SerialLoop[str]:
        self.loop = SerialLoop(
            self.clock,
            interval,
            self.runs,
            backoff=backoff,
            label="test loop",
            on_end=self.ends.append,
            on_skip=self.skip_totals.append,
        )
        return self.loop

    def outcomes(self) -> List[object]:
        """Each run's result, or the type of the exception it failed with."""
        return [
            type(end.outcome.value) if isinstance(end.outcome, Failure) else end.outcome
            for end in self.ends
        ]


class TickTests(LoopTestCase):
    def test_runs_at_start_and_every_interval(self) -> None:
        """start() runs at once, then at every tick: 0, 10, 20, 30."""
        self.make().start()
        self.clock.pump([10, 10, 10])
        self.assertEqual(self.runs.started, [0, 10, 20, 30])
        self.assertEqual(self.outcomes(), ["run 1", "run 2", "run 3", "run 4"])
        self.assertEqual(self.loop.skipped_ticks, 0)

    def test_start_not_now_waits_one_interval(self) -> None:
        """start(now=False): the first run is at the first tick."""
        self.make().start(now=False)
        self.assertEqual(self.runs.started, [])
        self.assertEqual(self.loop.next_attempt_at(), 10)
        self.clock.advance(10)
        self.assertEqual(self.runs.started, [10])

    def test_ticks_finding_a_run_in_progress_are_skipped_and_counted(self) -> None:
        """A run outlasting two ticks: both are skipped and counted, nothing queues."""
        self.runs.hold = True
        self.make().start()
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(self.runs.started, [0])
        self.assertEqual(self.loop.skipped_ticks, 2)
        self.assertEqual(self.skip_totals, [1, 2])
        self.runs.held.pop().callback("slow")
        self.assertEqual(self.runs.started, [0], "the end of a run starts nothing")
        self.clock.advance(10)
        self.assertEqual(self.runs.started, [0, 30])
        self.assertEqual(self.ends[0].outcome, "slow")
        self.assertEqual((self.ends[0].started_at, self.ends[0].ended_at), (0, 20))

    def test_missed_intervals_count_as_skipped(self) -> None:
        """A clock jumping 35 s over a 10 s interval: one run, two ticks skipped."""
        self.make().start()
        self.clock.advance(35)
        self.assertEqual(self.runs.started, [0, 35])
        self.assertEqual(self.loop.skipped_ticks, 2)
        self.assertEqual(self.skip_totals, [2])

    def test_next_attempt_is_the_next_tick(self) -> None:
        """next_attempt_at is the coming tick; None before start and after stop."""
        loop = self.make()
        self.assertIsNone(loop.next_attempt_at())
        loop.start()
        self.assertEqual(loop.next_attempt_at(), 10)
        self.clock.advance(10)
        self.assertEqual(loop.next_attempt_at(), 20)
        loop.stop()
        self.assertIsNone(loop.next_attempt_at())


class BackoffTests(LoopTestCase):
    def test_failures_retry_after_the_backoff_delays(self) -> None:
        """Retries after 1, 2, 4 and 8 s (jitter 0), never a moment earlier."""
        self.runs.error = ConnectionError("down")
        self.make(interval=60, backoff=lambda n: backoff_delay(n, 60, lambda: 0.0)).start()
        for retry_at in (1, 3, 7, 15):
            before = len(self.runs.started)
            self.clock.advance(retry_at - 0.001 - self.clock.seconds())
            self.assertEqual(len(self.runs.started), before, f"no retry before {retry_at}")
            self.clock.advance(0.001)
            self.assertEqual(len(self.runs.started), before + 1)
        self.assertEqual(self.runs.started, [0, 1, 3, 7, 15])
        self.assertEqual([end.retry_in for end in self.ends], [1, 2, 4, 8, 16])
        self.assertEqual([end.consecutive_failures for end in self.ends], [1, 2, 3, 4, 5])
        self.assertEqual(self.loop.next_attempt_at(), 31)

    def test_jitter_shortens_each_wait(self) -> None:
        """With jitter 0.5 each wait is a tenth shorter: 0.9, 1.8, 3.6 s."""
        self.runs.error = ConnectionError("down")
        self.make(interval=60, backoff=lambda n: backoff_delay(n, 60, lambda: 0.5)).start()
        self.assertEqual(self.loop.next_attempt_at(), 0.9)
        self.clock.advance(0.9)
        self.clock.advance(1.8)
        self.assertEqual([end.retry_in for end in self.ends], [0.9, 1.8, 3.6])
        self.assertEqual(self.runs.started, [0, 0.9, 2.7])

    def test_the_wait_is_capped_at_the_interval(self) -> None:
        """With a 10 s interval: 1, 2, 4, 8 s, then 10 s for good, jitter or not."""
        self.runs.error = ConnectionError("down")
        self.make(interval=10, backoff=lambda n: backoff_delay(n, 10, lambda: 0.5)).start()
        self.clock.pump([0.9, 1.8, 3.6, 7.2, 10, 10])
        self.assertEqual([end.retry_in for end in self.ends], [0.9, 1.8, 3.6, 7.2, 10, 10, 10])
        self.assertEqual([round(t, 9) for t in self.runs.started],
                         [0, 0.9, 2.7, 6.3, 13.5, 23.5, 33.5])
        self.assertEqual(self.loop.skipped_ticks, 0)

    def test_a_success_resets_the_failures_and_returns_to_the_ticks(self) -> None:
        """After a failed run and a successful retry, runs follow the interval again."""
        self.runs.error = ConnectionError("down")
        self.make(interval=10, backoff=lambda n: 2.0).start()
        self.runs.error = None
        self.clock.advance(2)
        self.assertEqual(self.loop.consecutive_failures, 0)
        self.assertEqual(self.ends[-1].retry_in, None)
        self.assertEqual(self.loop.next_attempt_at(), 10)
        self.clock.advance(8)
        self.assertEqual(self.runs.started, [0, 2, 10])

    def test_a_tick_during_the_backoff_wait_neither_runs_nor_skips(self) -> None:
        """The pending retry is the next attempt: ticks before it do nothing."""
        self.runs.error = ConnectionError("down")
        self.make(interval=1, backoff=lambda n: 5.0).start()
        self.clock.pump([1, 1, 1, 1])
        self.assertEqual(self.runs.started, [0])
        self.assertEqual(self.loop.skipped_ticks, 0)
        self.clock.advance(1)
        self.assertEqual(self.runs.started, [0, 5])

    def test_without_backoff_a_failure_waits_for_the_next_tick(self) -> None:
        """No backoff policy: a failed run schedules nothing of its own."""
        self.runs.error = ConnectionError("down")
        self.make(interval=10).start()
        self.assertEqual(self.ends[0].retry_in, None)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1, "only the next tick")
        self.clock.advance(10)
        self.assertEqual(self.runs.started, [0, 10])

    def test_a_raising_callable_fails_its_run_not_the_loop(self) -> None:
        """A callable that raises is a failed run: retried, and the loop keeps ticking."""
        def broken() -> "defer.Deferred[str]":
            self.runs.started.append(self.clock.seconds())
            raise ZeroDivisionError("bug")

        loop = SerialLoop(self.clock, 10, broken, backoff=lambda n: 1.0, on_end=self.ends.append)
        loop.start()
        self.clock.advance(1)
        self.assertEqual(self.runs.started, [0, 1])
        self.assertTrue(loop.running)
        self.assertIsInstance(self.ends[0].outcome, Failure)
        self.assertEqual(self.outcomes(), [ZeroDivisionError, ZeroDivisionError])
        loop.stop()

    def test_a_raising_listener_is_logged_and_the_loop_goes_on(self) -> None:
        """on_end raising is logged; runs go on at every tick."""
        def bad_listener(end: RunEnd[str]) -> None:
            raise RuntimeError("listener bug")

        loop = SerialLoop(self.clock, 10, self.runs, on_end=bad_listener)
        loop.start()
        self.clock.advance(10)
        self.assertEqual(self.runs.started, [0, 10])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class Outage(NamedTuple):
    attempts: List[float]  # when each run during the outage started
    recovered_at: float  # when the first run after it started (and succeeded)


def outage(interval: float, down: float, up: float, jitter: float = 0.0) -> Outage:
    """A loop on its own clock, polling every `interval` with the exporter's backoff, whose
    runs fail from `down` to `up` (Kafka away); stepped call by call until the first
    success after `up`."""
    clock = task.Clock()
    runs = Runs(clock)
    clock.callLater(down, setattr, runs, "error", ConnectionError("down"))
    clock.callLater(up, setattr, runs, "error", None)
    loop = SerialLoop(clock, interval, runs,
                      backoff=lambda n: backoff_delay(n, interval, lambda: jitter))
    loop.start()
    while not [t for t in runs.started if t >= up]:
        # One call at a time: every call sees its own moment as now.
        clock.advance(min(call.getTime() for call in clock.getDelayedCalls()) - clock.seconds())
    loop.stop()
    return Outage([t for t in runs.started if down <= t < up],
                  next(t for t in runs.started if t >= up))


class OutageTests(SynchronousTestCase):
    """Backoff through an outage: data back within one interval of Kafka's return, and no more
    than one attempt per interval once the first quick retries are spent."""

    def test_ten_minutes_down_with_a_2s_poll(self) -> None:
        """Down from 9.5 s to 609.5 s: the tick at 10 fails, retries at 11, 13, ... 609, one
        per interval; the retry at 611 gets the data, 1.5 s after the return."""
        result = outage(interval=2, down=9.5, up=609.5)
        self.assertEqual(result.attempts, [10, 11] + [float(t) for t in range(13, 610, 2)])
        self.assertEqual(len(result.attempts), 301)
        self.assertLessEqual(len(result.attempts), 600 / 2 + 1)
        self.assertEqual(result.recovered_at, 611)

    def test_kafka_back_just_after_an_attempt_is_still_within_one_interval(self) -> None:
        """The worst moment to return, just after a failed retry: the data is back 2 s later."""
        result = outage(interval=2, down=9.5, up=609.001)
        self.assertEqual(result.attempts[-1], 609)
        self.assertEqual(result.recovered_at, 611)
        self.assertLessEqual(result.recovered_at - 609.001, 2)

    def test_a_long_poll_interval_bounds_the_wait_too(self) -> None:
        """A 10-minute poll, a day down: retries at +1, 2, 4 ... 512 s, then every 600 s."""
        result = outage(interval=600, down=0.5, up=86_400.5)
        gaps = [b - a for a, b in zip(result.attempts, result.attempts[1:])]
        self.assertEqual(gaps[:10], [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        self.assertEqual(set(gaps[10:]), {600})
        self.assertLessEqual(result.recovered_at - 86_400.5, 600)

    @settings(max_examples=60, deadline=None)
    @given(
        interval=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]),
        down=st.floats(0.01, 50.0),
        intervals_down=st.floats(0.0, 40.0),
        jitter=st.floats(0.0, 0.999),
    )
    def test_any_outage(self, interval: float, down: float, intervals_down: float,
                        jitter: float) -> None:
        """Whatever the interval, the outage and the jitter: every gap between attempts is at
        most one interval (so the data is back within one interval of the return), and once a
        gap is a whole interval every later one is."""
        up = down + intervals_down * interval
        result = outage(interval, down, up, jitter)
        times = result.attempts + [result.recovered_at]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertLessEqual(result.recovered_at - up, interval + 1e-9)
        self.assertTrue(all(gap <= interval + 1e-9 for gap in gaps), gaps)
        capped = [i for i, gap in enumerate(gaps) if gap >= interval - 1e-9]
        if capped:
            after = gaps[capped[0]:-1]  # the last gap, to the success, may be a tick's
            self.assertTrue(all(abs(gap - interval) < 1e-9 for gap in after), gaps)


class RunNowTests(LoopTestCase):
    def test_run_now_on_a_loop_not_started_schedules_nothing(self) -> None:
        """A one-shot run that fails: its end says so, and no retry is scheduled."""
        self.runs.error = ConnectionError("down")
        loop = self.make(backoff=lambda n: 1.0)
        end = self.successResultOf(loop.run_now())
        self.assertFalse(end.ok)
        self.assertEqual((end.consecutive_failures, end.retry_in), (1, None))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(loop.next_attempt_at())

    def test_run_now_during_a_run_waits_for_that_run(self) -> None:
        """run_now while a run is in progress starts none; it fires with that run's end."""
        self.runs.hold = True
        loop = self.make()
        loop.start()
        waiting = loop.run_now()
        self.assertNoResult(waiting)
        self.runs.held.pop().callback("the first")
        self.assertEqual(self.successResultOf(waiting).outcome, "the first")
        self.assertEqual(self.runs.started, [0])

    def test_run_now_replaces_a_pending_retry(self) -> None:
        """A run asked for during a backoff wait runs at once; the retry is dropped."""
        self.runs.error = ConnectionError("down")
        loop = self.make(interval=10, backoff=lambda n: 5.0)
        loop.start()
        self.clock.advance(1)
        self.runs.error = None
        self.assertTrue(self.successResultOf(loop.run_now()).ok)
        self.assertEqual(loop.next_attempt_at(), 10)
        self.clock.advance(9)
        self.assertEqual(self.runs.started, [0, 1, 10])

    def test_cancelling_a_wait_leaves_the_run_going(self) -> None:
        """A caller giving up on run_now() (a timeout) does not end the run."""
        self.runs.hold = True
        loop = self.make()
        waiting = loop.run_now()
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        self.assertTrue(loop.busy)
        self.runs.held.pop().callback("late")
        self.assertEqual(self.outcomes(), ["late"])
        self.assertFalse(loop.busy)

    def test_cancel_retry_drops_only_the_retry(self) -> None:
        """cancel_retry: the next run is the next tick's."""
        self.runs.error = ConnectionError("down")
        loop = self.make(interval=10, backoff=lambda n: 5.0)
        loop.start()
        self.assertEqual(loop.next_attempt_at(), 5)
        loop.cancel_retry()
        self.assertEqual(loop.next_attempt_at(), 10)
        self.clock.advance(9)
        self.assertEqual(self.runs.started, [0])
        self.clock.advance(1)
        self.assertEqual(self.runs.started, [0, 10])


class StopTests(LoopTestCase):
    def test_idle_fires_at_once_when_no_run_is_in_progress(self) -> None:
        """idle() of a loop at rest has already fired."""
        self.assertIsNone(self.successResultOf(self.make().idle()))

    def test_stop_while_running_lets_the_run_end_and_schedules_nothing(self) -> None:
        """stop() during a run: no more ticks; the run ends, fails, and is not retried."""
        self.runs.hold = True
        loop = self.make(backoff=lambda n: 1.0)
        loop.start()
        loop.stop()
        self.assertFalse(loop.running)
        idle = loop.idle()
        self.assertNoResult(idle)
        self.runs.held.pop().errback(ConnectionError("down"))
        self.successResultOf(idle)
        self.assertEqual(self.ends[0].retry_in, None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.runs.started, [0])

    def test_stop_cancels_a_pending_retry(self) -> None:
        """stop() during a backoff wait leaves nothing scheduled."""
        self.runs.error = ConnectionError("down")
        loop = self.make(backoff=lambda n: 1.0)
        loop.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 2, "the tick and the retry")
        loop.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StepTimesTests(SynchronousTestCase):
    def test_each_step_is_timed_from_its_start_to_its_end_whatever_its_outcome(self) -> None:
        """Steps of 2 s, 7.5 s (failed) and 0 s: their seconds in the order they ended, the
        slowest, and the run's elapsed time, which counts the gap between steps too."""
        clock = task.Clock()
        clock.advance(100)
        steps = StepTimes(clock)
        self.assertIsNone(steps.slowest())
        read: "defer.Deferred[str]" = defer.Deferred()
        self.assertIs(steps.timed("read", read), read)
        clock.advance(2)
        read.callback("data")
        self.assertEqual(self.successResultOf(read), "data")
        clock.advance(0.5)
        fetch: "defer.Deferred[str]" = steps.timed("fetch", defer.Deferred())
        clock.advance(7.5)
        fetch.errback(ConnectionError("down"))
        self.failureResultOf(fetch, ConnectionError)
        steps.timed("build", defer.succeed("snapshot"))
        self.assertEqual(steps.steps, [("read", 2.0), ("fetch", 7.5), ("build", 0.0)])
        self.assertEqual(steps.slowest(), ("fetch", 7.5))
        self.assertEqual(steps.elapsed(), 10.0)
