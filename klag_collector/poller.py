"""One cluster's collection loop as a Twisted service.

A SerialLoop runs a cycle every `poll_interval`, one at a time, retrying failed ones
with backoff, never more than one interval apart. A cycle reads Kafka, samples record timestamps, computes lag and builds
families in worker threads, then swaps in a new immutable snapshot with one attribute
assignment.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Generator, List, Mapping, Optional, Protocol, Set, cast

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import families
from .backoff import backoff_delay
from .config import ClusterConfig, ExporterConfig
from .errors import describe_error
from .lag import compute_lag
from .record_age import RecordTime, Timestamps
from .loop import RunEnd, SerialLoop, StepTimes
from .metrics import CLUSTER, Granularity
from .model import ClusterData, ClusterHealth, LagView, RecordKey
from .timestamps import FetchItem, RunInThread, Sample, TimestampCache, TimestampSampler

__all__ = ["ClusterPoller", "ClusterSnapshot", "RunInThread", "Source", "build_snapshot"]

# How long stopService waits for each of its steps (closing the clients, the in-flight
# cycle's end): the clients are closed first, so a cycle ends at once, never after its timeout.
STOP_GRACE = 1.0
# Reasons told per outage: an edge failing with ever-new texts stays a few lines.
MAX_REASONS_TOLD = 8

class ClusterState(str, enum.Enum):
    """A cluster's state as /ready and the status page report it."""

    STARTING = "starting"
    OK = "ok"
    FAILING = "failing"
    STALE = "stale"

    def __str__(self) -> str:
        # The value in f-strings and str() on every Python: it is shown to people and in JSON.
        return self.value



class Source(Protocol):
    """The blocking Kafka edge a poller reads from (KafkaSource, or a test fake)."""

    def read(self, now: float) -> ClusterData: ...

    def fetch_timestamps(self, items: List[FetchItem]) -> Mapping[RecordKey, RecordTime]: ...

    def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """One successful cycle's result: lag figures and their pre-built families.

    The view's partition rows are kept only when asked for (`--once` prints them); served
    from, the families are the one copy of every row.
    """

    view: LagView
    families: families.Families
    taken_at: float


def build_snapshot(
    data: ClusterData,
    timestamps: Optional[Timestamps],
    now: float,
    base: families.Labels,
    granularity: Granularity,
    keep_rows: bool = False,
) -> ClusterSnapshot:
    """Compute lag and build the families; runs in a worker thread."""
    view = compute_lag(data, timestamps, now)
    built = families.lag_families(view, base, granularity)
    if not keep_rows:
        view = replace(view, partitions=(), share_partitions=())
    return ClusterSnapshot(view, built, now)


class ClusterPoller(service.Service):
    """Polls one cluster; exposes the current snapshot and health to readers."""

    # A cycle's steps, as the warning about a slow cycle names them.
    READING = "reading groups and offsets"
    FETCHING = "fetching timestamps"
    BUILDING = "building the snapshot"

    log = Logger()
    # Service declares name Optional; a poller always has its cluster's.
    name: str

    def __init__(
        self,
        cluster: ClusterConfig,
        exporter: ExporterConfig,
        source: Source,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        on_change: Callable[[], None] = lambda: None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = cluster.name
        self.cluster = cluster
        self.exporter = exporter
        self.source = source
        self.clock = clock
        self._run = run_in_thread
        self._on_change = on_change
        self.base_labels: families.Labels = ((CLUSTER, cluster.name),) + tuple(
            cluster.labels.items()
        )
        sampling = exporter.timestamp_sampling
        # Used by the sampler's worker-thread steps only, never on the reactor.
        self.cache = TimestampCache(sampling.cache_ttl)
        self.sampler: Optional[TimestampSampler] = None
        if sampling.enabled:
            self.sampler = TimestampSampler(
                self.cache, self._fetch_timestamps, sampling.max_concurrent_fetches, run_in_thread
            )
        self.snapshot: Optional[ClusterSnapshot] = None
        # Whether snapshots keep their view's partition rows: only a one-shot printout reads them.
        self.keep_rows = False
        self.health = ClusterHealth()
        self._loop: SerialLoop[ClusterSnapshot] = SerialLoop(
            clock,
            exporter.poll_interval,
            self._cycle,
            backoff=lambda failures: backoff_delay(failures, exporter.poll_interval, jitter),
            label=f"cluster {cluster.name}",
            on_end=self._cycle_ended,
            on_skip=self._ticks_skipped,
        )
        self._stale_rerender: Optional[IDelayedCall] = None
        # While failing: when the first failed cycle in a row ended, the reasons logged since.
        self._failing_since = 0.0
        self._reasons_told: Set[str] = set()
        # Between stopService and the next startService: cycles end at their next step.
        self._stopping = False
        # When the running cycle's timestamp step gives up on fetches not answered yet, and
        # whether it did (and closed the clients).
        self._fetch_deadline = 0.0
        self._fetches_given_up = False

    # -- what readers see -------------------------------------------------------

    def fresh_snapshot(self, now: float) -> Optional[ClusterSnapshot]:
        """The current snapshot if it is recent enough to be reported, else None.

        Read once here, so a caller never pairs one snapshot with another's freshness
        when a cycle swaps it meanwhile.
        """
        snap = self.snapshot
        if snap is not None and now - snap.taken_at <= self.exporter.staleness_threshold:
            return snap
        return None

    def is_fresh(self, now: float) -> bool:
        """True when the last successful cycle is recent enough to be reported."""
        return self.fresh_snapshot(now) is not None

    def state(self, now: float) -> ClusterState:
        """The cluster's state, as /ready reports it."""
        failing = self.health.consecutive_failures > 0
        if self.snapshot is None:
            return ClusterState.FAILING if failing else ClusterState.STARTING
        if not self.is_fresh(now):
            return ClusterState.STALE
        return ClusterState.FAILING if failing else ClusterState.OK

    def next_attempt_in(self, now: float) -> Optional[float]:
        """Seconds until the next cycle starts: a backoff retry or the next tick."""
        at = self._loop.next_attempt_at()
        return None if at is None else max(0.0, at - now)

    # -- service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._loop.start(now=True)

    @defer.inlineCallbacks
    def stopService(self) -> Generator["defer.Deferred[Any]", Any, None]:
        """Fires once the clients are closed and the in-flight cycle ended, each bounded.

        Closing the clients first fails whatever the cycle waits for in kafka-python, so its
        threads come back now rather than after kafka_timeout, and the cycle ends at its
        next step.
        """
        super().stopService()
        self._stopping = True
        self._loop.stop()
        # Scheduled by an earlier success: a cycle ending after the stop schedules none.
        self._cancel_stale_rerender()
        yield self._within(STOP_GRACE, self._reset_clients())
        if self._loop.busy and not (yield self._within(STOP_GRACE, self._loop.idle())):
            self.log.warn("cluster {cluster}: cycle still running at stop; closing its clients "
                          "again", cluster=self.name)
            # The cycle may have opened a client after the first reset, or be waiting to.
            yield self._within(STOP_GRACE, self._reset_clients())

    def _within(self, seconds: float, d: "defer.Deferred[Any]") -> "defer.Deferred[bool]":
        """Whether `d` ended within `seconds`; its outcome is dropped (a reset that failed
        has still dropped its clients)."""
        def ended(outcome: Any) -> bool:
            return not (isinstance(outcome, Failure) and outcome.check(defer.TimeoutError))

        return d.addTimeout(seconds, self.clock).addBoth(ended)

    def _reset_clients(self) -> "defer.Deferred[None]":
        """Close the clients in a worker thread, failing the waits of any thread still in them."""
        return self._run(self.source.reset)

    # -- cycles -------------------------------------------------------------------

    def poll_now(self) -> "defer.Deferred[bool]":
        """Run a cycle unless one is running; fires with whether that cycle succeeded.

        Only a started poller follows a failure with a backoff retry and a success with
        a re-render when its data turns stale: a poller never started (collect_once)
        leaves nothing scheduled.
        """
        return self._loop.run_now().addCallback(lambda end: end.ok)

    @defer.inlineCallbacks
    def _cycle(self) -> Generator["defer.Deferred[Any]", Any, ClusterSnapshot]:
        # A failed or timed-out read fails the cycle; the loop then hands it to _cycle_ended.
        # What the read brought is fresh data: the timestamp step, bounded on its own, can
        # only leave time lags unknown. A stop ends the cycle before its next step.
        steps = StepTimes(self.clock)
        try:
            timeout = self.exporter.performance.kafka_timeout
            read = self._run(self.source.read, self.clock.seconds())
            data = yield steps.timed(self.READING, read.addTimeout(timeout, self.clock))
            timestamps = None
            if self.sampler is not None:
                self._end_if_stopping()
                timestamps = yield steps.timed(self.FETCHING, self._sample(self.sampler, data))
            self._end_if_stopping()
            snapshot: ClusterSnapshot = yield steps.timed(self.BUILDING, self._run(
                build_snapshot,
                data,
                timestamps,
                self.clock.seconds(),
                self.base_labels,
                self.exporter.granularity,
                self.keep_rows,
            ))
        finally:
            self._tell_if_slow(steps)
        return snapshot

    def _end_if_stopping(self) -> None:
        if self._stopping:
            raise defer.CancelledError("the poller is stopping")

    @defer.inlineCallbacks
    def _sample(
        self, sampler: TimestampSampler, data: ClusterData
    ) -> Generator["defer.Deferred[Any]", Any, Timestamps]:
        """The cycle's timestamps, fetched by a deadline of kafka_timeout from now.

        A batch not answered by then is left out, and so is every batch when the step
        fails: those rows' time lag is unknown this cycle (timestamp_unavailable).
        """
        self._fetch_deadline = self.clock.seconds() + self.exporter.performance.kafka_timeout
        self._fetches_given_up = False
        try:
            sample: Sample = yield sampler.sample(data, self.clock.seconds())
        except Exception as e:
            self.log.warn("cluster {cluster}: timestamps not read ({reason}); time lag unknown "
                          "this cycle", cluster=self.name, reason=describe_error(e))
            return {}
        self.health = replace(self.health, cache=sample.cache)
        return sample.timestamps

    def _fetch_timestamps(
        self, batch: List[FetchItem]
    ) -> "defer.Deferred[Mapping[RecordKey, RecordTime]]":
        # A batch gets what is left of the step's deadline; one that would start after it,
        # or after the stop, asks nothing: its rows' time lag stays unknown.
        left = self._fetch_deadline - self.clock.seconds()
        if left <= 0 or self._stopping:
            return defer.succeed({})
        fetch = self._run(self.source.fetch_timestamps, batch).addTimeout(left, self.clock)
        return fetch.addErrback(self._fetch_timed_out)

    def _fetch_timed_out(self, failure: Failure) -> Failure:
        # The fetches still out all time out at the deadline: one reset ends their threads'
        # waits in kafka-python.
        if failure.check(defer.TimeoutError) and not self._fetches_given_up:
            self._fetches_given_up = True
            self._reset_clients().addErrback(lambda f: None)
        return failure

    def _tell_if_slow(self, steps: StepTimes) -> None:
        took, slowest = steps.elapsed(), steps.slowest()
        threshold = self.exporter.staleness_threshold
        if took > threshold and slowest is not None:
            self.log.warn(
                "cluster {cluster}: cycle took {took:.1f}s, longer than staleness_threshold "
                "{threshold:g}s; most in {step} ({seconds:.1f}s)",
                cluster=self.name, took=took, threshold=threshold, step=slowest[0],
                seconds=slowest[1],
            )

    def _cycle_ended(self, end: RunEnd[ClusterSnapshot]) -> None:
        if isinstance(end.outcome, Failure) and self._stopping:
            # Cut short by the stop (its clients closed), or failing as it came: no news.
            self.log.debug("cluster {cluster}: cycle ended by the stop ({reason})",
                           cluster=self.name,
                           reason=describe_error(cast(BaseException, end.outcome.value)))
            return
        if isinstance(end.outcome, Failure):
            self._failed(end.outcome, end)
        else:
            self._succeeded(end.outcome, end)
        self._on_change()

    def _succeeded(self, snapshot: ClusterSnapshot, end: RunEnd[ClusterSnapshot]) -> None:
        if self.health.consecutive_failures:
            self.log.info(
                "cluster {cluster}: collection recovered after {seconds:.1f}s ({failures} failed cycles)",
                cluster=self.name,
                seconds=end.ended_at - self._failing_since,
                failures=self.health.consecutive_failures,
            )
        self.snapshot = snapshot
        self.health = replace(
            self.health,
            last_success=snapshot.taken_at,
            last_duration=end.ended_at - end.started_at,
            consecutive_failures=0,
            last_error="",
            next_attempt_at=None,
        )
        if self.running:
            self._schedule_stale_rerender()

    def _failed(self, failure: Failure, end: RunEnd[ClusterSnapshot]) -> None:
        # A Failure of a run always holds the exception the run failed with.
        reason = describe_error(cast(BaseException, failure.value))
        self._tell_failure(reason, end)
        self.health = replace(
            self.health,
            last_duration=end.ended_at - end.started_at,
            consecutive_failures=end.consecutive_failures,
            failures_total=self.health.failures_total + 1,
            last_error=reason,
            next_attempt_at=None if end.retry_in is None else end.ended_at + end.retry_in,
        )
        # Reconnect from scratch next time: a client that timed out may be wedged, and
        # closing it fails the waits of a thread still blocked in it. Closing a client that
        # failed may fail too; it is dropped either way.
        self._reset_clients().addErrback(lambda f: None)

    def _tell_failure(self, reason: str, end: RunEnd[ClusterSnapshot]) -> None:
        # At info, one line per change: failing, a reason not told yet in this outage, recovered.
        # An outage of hours is two lines, not thousands, however its reasons alternate.
        if end.consecutive_failures == 1:
            self._failing_since = end.ended_at
            self._reasons_told = {reason}
            self._log_failing(reason, end.retry_in)
        elif reason not in self._reasons_told and len(self._reasons_told) < MAX_REASONS_TOLD:
            self._reasons_told.add(reason)
            self.log.error(
                "cluster {cluster}: collection failed ({reason}), a new reason after {seconds:.1f}s "
                "of failing",
                cluster=self.name,
                reason=reason,
                seconds=end.ended_at - self._failing_since,
            )
        else:
            self.log.debug(
                "cluster {cluster}: still failing ({reason}), {failures} cycles in a row",
                cluster=self.name,
                reason=reason,
                failures=end.consecutive_failures,
            )

    def _log_failing(self, reason: str, retry_in: Optional[float]) -> None:
        if retry_in is None:  # a one-shot run, or one that ended after the stop
            self.log.error(
                "cluster {cluster}: collection failed ({reason})", cluster=self.name, reason=reason
            )
        else:
            self.log.error(
                "cluster {cluster}: collection failed ({reason}); retry in {delay:.1f}s, "
                "backing off to every {interval:g}s",
                cluster=self.name,
                reason=reason,
                delay=retry_in,
                interval=self.exporter.poll_interval,
            )

    def _ticks_skipped(self, total: int) -> None:
        self.health = replace(self.health, skipped_ticks=total)
        self._on_change()

    # -- the stale re-render ---------------------------------------------------------

    def _schedule_stale_rerender(self) -> None:
        # Data turns stale between cycles when Kafka is down; re-render at that moment
        # so the series leave /metrics on time even while retries back off.
        self._cancel_stale_rerender()
        delay = self.exporter.staleness_threshold + 0.001
        self._stale_rerender = self.clock.callLater(delay, self._on_change)

    def _cancel_stale_rerender(self) -> None:
        if self._stale_rerender is not None and self._stale_rerender.active():
            self._stale_rerender.cancel()
        self._stale_rerender = None
