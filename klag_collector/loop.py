"""Run one callable every interval, one run at a time, backing off after failures.

A cluster's poll cycles and the OTLP exports run this way. As with Twisted's
TimerService the callable returns a Deferred and the loop waits for it; unlike it, a
tick that finds the last run still going is skipped and counted rather than waited for,
and a failed run (the Deferred fails) is retried after a backoff wait instead of at the
next tick. Retries are scheduled only while the loop is started: a run asked for with
run_now() on a loop never started leaves nothing scheduled. StepTimes times the named
steps of one run, so a slow run can say where its time went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, List, Optional, Tuple, TypeVar, Union

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")

# Consecutive failed runs (1 after the first) -> seconds to wait before the retry.
Backoff = Callable[[int], float]


@dataclass(frozen=True)
class RunEnd(Generic[T]):
    """How one run ended, as the loop's owner and run_now() callers hear of it."""

    outcome: Union[T, Failure]  # what the run's Deferred fired with, or why it failed
    started_at: float
    ended_at: float
    consecutive_failures: int  # this run included; 0 after a success
    retry_in: Optional[float]  # seconds until the backoff retry; None when none is scheduled

    @property
    def ok(self) -> bool:
        return not isinstance(self.outcome, Failure)


def _ignore(_: Any) -> None:
    pass


class StepTimes:
    """How long each named step of one run took on `clock`, to say where a slow run's time went."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._started_at = clock.seconds()
        self.steps: List[Tuple[str, float]] = []  # (step, seconds), in the order they ended

    def timed(self, step: str, started: "defer.Deferred[T]") -> "defer.Deferred[T]":
        """`started`, a step begun just now, timed until it ends, whatever its outcome."""
        at = self._clock.seconds()

        def ended(outcome: Any) -> Any:
            self.steps.append((step, self._clock.seconds() - at))
            return outcome

        return started.addBoth(ended)

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return self._clock.seconds() - self._started_at

    def slowest(self) -> Optional[Tuple[str, float]]:
        """The step that took longest, with its seconds; None before any step ended."""
        return max(self.steps, key=lambda step: step[1], default=None)


class SerialLoop(Generic[T]):
    """Calls `run` every `interval` seconds of `clock`, never two runs at once.

    `on_end` hears of every run's end (after any retry is scheduled, so it can tell the
    wait); `on_skip` hears the new total whenever ticks are skipped. Neither, nor `run`,
    can stop the loop by raising: that is logged under `label`.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        run: Callable[[], "defer.Deferred[T]"],
        *,
        backoff: Optional[Backoff] = None,
        label: str = "loop",
        on_end: Callable[[RunEnd[T]], None] = _ignore,
        on_skip: Callable[[int], None] = _ignore,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._run = run
        self._backoff = backoff
        self._label = label
        self._on_end = on_end
        self._on_skip = on_skip
        self.skipped_ticks = 0
        self.consecutive_failures = 0
        self.busy = False  # a run is in progress
        self._ticks: Optional[task.LoopingCall] = None
        self._retry: Optional[IDelayedCall] = None
        self._next_tick_at: Optional[float] = None
        self._waiting: List["defer.Deferred[RunEnd[T]]"] = []

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._ticks is not None

    def start(self, now: bool = True) -> None:
        """Tick every interval from now on; `now`: the first tick is at once."""
        ticks = task.LoopingCall.withCount(self._tick)
        ticks.clock = self._clock
        self._ticks = ticks
        self._next_tick_at = self._clock.seconds() + self._interval
        ticks.start(self._interval, now=now).addErrback(self._ticks_died)

    def stop(self) -> None:
        """No more ticks or retries; a run in progress goes on (idle() says when it ends)."""
        ticks, self._ticks = self._ticks, None
        if ticks is not None and ticks.running:
            ticks.stop()
        self.cancel_retry()
        self._next_tick_at = None

    def run_now(self) -> "defer.Deferred[RunEnd[T]]":
        """Start a run unless one is in progress; fires when that run ends.

        A pending retry is dropped: this run takes its place. Cancelling the returned
        Deferred stops the waiting, not the run.
        """
        # Waiting starts before the run does: a run may end before it returns.
        waiting = self._wait_for_run_end()
        if not self.busy:
            self.cancel_retry()
            self._start_run()
        return waiting

    def idle(self) -> "defer.Deferred[None]":
        """Fires once no run is in progress (at once if none is)."""
        if not self.busy:
            return defer.succeed(None)
        return self._wait_for_run_end().addCallback(_ignore)

    def cancel_retry(self) -> None:
        """Drop a pending backoff retry; the next tick runs as usual."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def next_attempt_at(self) -> Optional[float]:
        """When the next run starts by itself: the pending retry, else the next tick."""
        if self._retry is not None:
            return float(self._retry.getTime())
        return self._next_tick_at

    # -- inside -------------------------------------------------------------------

    def _tick(self, count: int) -> None:
        # `count` > 1: the clock jumped or the reactor was blocked past whole intervals.
        self._next_tick_at = self._clock.seconds() + self._interval
        skipped = count - 1 + (1 if self.busy else 0)
        if skipped:
            self.skipped_ticks += skipped
            self._tell(self._on_skip, self.skipped_ticks)
        # A tick during a backoff wait is no skip: the retry is the next attempt.
        if not self.busy and self._retry is None:
            self._start_run()

    def _start_run(self) -> None:
        self.busy = True
        started_at = self._clock.seconds()
        # maybeDeferred: a callable that raises fails its run, not the loop.
        defer.maybeDeferred(self._run).addBoth(self._run_ended, started_at)

    def _run_ended(self, outcome: Union[T, Failure], started_at: float) -> None:
        self.busy = False
        retry_in: Optional[float] = None
        if isinstance(outcome, Failure):
            self.consecutive_failures += 1
            retry_in = self._schedule_retry()
        else:
            self.consecutive_failures = 0
        end = RunEnd(outcome, started_at, self._clock.seconds(), self.consecutive_failures,
                     retry_in)
        # Taken before on_end, which may start the next run and wait for that one.
        waiting, self._waiting = self._waiting, []
        self._tell(self._on_end, end)
        for d in waiting:
            if not d.called:  # cancelled meanwhile (a stop gave up waiting)
                d.callback(end)

    def _schedule_retry(self) -> Optional[float]:
        if self._backoff is None or not self.running:
            return None
        delay = self._backoff(self.consecutive_failures)
        self._retry = self._clock.callLater(delay, self._retry_now)
        return delay

    def _retry_now(self) -> None:
        # Never busy here: a run starts only when no retry is pending, or drops it.
        self._retry = None
        self._start_run()

    def _wait_for_run_end(self) -> "defer.Deferred[RunEnd[T]]":
        waiting: "defer.Deferred[RunEnd[T]]" = defer.Deferred()
        self._waiting.append(waiting)
        return waiting

    def _tell(self, listener: Callable[[Any], None], news: Any) -> None:
        try:
            listener(news)
        except Exception:
            self.log.failure("{label}: listener failed", label=self._label)

    def _ticks_died(self, failure: Failure) -> None:
        # _tick guards everything it calls, so this is a bug in the loop itself; say so
        # loudly rather than let the runs stop while the process looks healthy.
        self.log.critical("{label}: loop died: {failure}", label=self._label, failure=failure)
