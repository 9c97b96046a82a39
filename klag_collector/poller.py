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
from .loop import RunEnd, SerialLoop
from .metrics import CLUSTER, Granularity
from .model import ClusterData, ClusterHealth, LagView, RecordKey
from .timestamps import FetchItem, RunInThread, TimestampCache, TimestampSampler

__all__ = ["ClusterPoller", "ClusterSnapshot", "RunInThread", "Source", "build_snapshot"]

# How long stopService waits for an in-flight cycle before giving up on it.
STOP_GRACE = 5.0
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
    """One successful cycle's result: lag figures and their pre-built families."""

    view: LagView
    families: families.Families
    taken_at: float


def build_snapshot(
    data: ClusterData,
    timestamps: Optional[Timestamps],
    now: float,
    base: families.Labels,
    granularity: Granularity,
) -> ClusterSnapshot:
    """Compute lag and build the families; runs in a worker thread."""
    view = compute_lag(data, timestamps, now)
    return ClusterSnapshot(view, families.lag_families(view, base, granularity), now)


class ClusterPoller(service.Service):
    """Polls one cluster; exposes the current snapshot and health to readers."""

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
        self._loop.start(now=True)

    @defer.inlineCallbacks
    def stopService(self) -> Generator["defer.Deferred[Any]", Any, None]:
        super().stopService()
        self._loop.stop()
        if self._loop.busy:
            try:
                yield self._loop.idle().addTimeout(STOP_GRACE, self.clock)
            except defer.TimeoutError:
                self.log.warn("cluster {cluster}: cycle still running at stop", cluster=self.name)
        # Scheduled by an earlier success: a cycle ending after the stop schedules none.
        self._cancel_stale_rerender()
        yield self._run(self.source.reset)

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
        # A failure of any step fails the cycle; the loop then hands it to _cycle_ended.
        timeout = self.exporter.performance.kafka_timeout
        read = self._run(self.source.read, self.clock.seconds())
        data = yield read.addTimeout(timeout, self.clock)
        timestamps = None
        if self.sampler is not None:
            sample = yield self.sampler.sample(data, self.clock.seconds())
            timestamps = sample.timestamps
            self.health = replace(self.health, cache=sample.cache)
        snapshot: ClusterSnapshot = yield self._run(
            build_snapshot,
            data,
            timestamps,
            self.clock.seconds(),
            self.base_labels,
            self.exporter.granularity,
        )
        return snapshot

    def _fetch_timestamps(
        self, batch: List[FetchItem]
    ) -> "defer.Deferred[Mapping[RecordKey, RecordTime]]":
        timeout = self.exporter.performance.kafka_timeout
        return self._run(self.source.fetch_timestamps, batch).addTimeout(timeout, self.clock)

    def _cycle_ended(self, end: RunEnd[ClusterSnapshot]) -> None:
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
        # Reconnect from scratch next time: a client that timed out may be wedged.
        self._run(self.source.reset).addErrback(lambda f: None)

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
