"""What the pollers show, read once per cluster, and a prometheus_client Collector over it.

`read_clusters()` is the one place that turns the pollers' current state into what is
reported: the renderer reads through it on the reactor thread, before each render, and
`LagCollector.collect()` whenever a registry asks. Neither makes a Kafka call or computes
lag: they join families that each cycle already built, so a host daemon can register the
collector in any CollectorRegistry.
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime

from . import metrics
from .families import Families, Labels, empty_family, health_families, merge
from .model import ClusterHealth
from .poller import ClusterPoller, ClusterSnapshot, ClusterState
from .shard_poller import ShardReport, shard_report


class ClusterReport(NamedTuple):
    """One cluster as reported at one moment, read from its poller in one go."""

    name: str
    base_labels: Labels
    health: ClusterHealth
    # The snapshot being reported: None before the first success and once it is stale.
    snapshot: Optional[ClusterSnapshot]
    # starting | ok | failing | stale, as /ready and the status page show it.
    state: ClusterState
    # With [exporter.sharding]: the shards the replica owns, and whether it collected them.
    sharding: Optional[ShardReport] = None

    def health_families(self) -> Families:
        """The cluster's own families: up is 1 only while a snapshot is reported."""
        found = health_families(self.health, self.base_labels, self.snapshot is not None)
        if self.sharding is not None:
            found.update(self.sharding.families(self.base_labels))
        return found


def read_clusters(pollers: Sequence[ClusterPoller], now: float) -> Tuple[ClusterReport, ...]:
    """Every cluster's report at `now`: a few references per cluster, no row is touched."""
    return tuple(
        ClusterReport(
            poller.name, poller.base_labels, poller.health, poller.fresh_snapshot(now),
            poller.state(now), shard_report(poller, now),
        )
        for poller in pollers
    )


def _families_of(reports: Iterable[ClusterReport]) -> Iterator[Families]:
    for report in reports:
        yield report.health_families()
        if report.snapshot is not None:
            yield report.snapshot.families


class LagCollector(Collector):
    """Yields every cluster's lag families (fresh clusters only) and health families."""

    def __init__(
        self,
        pollers: Sequence[ClusterPoller],
        granularity: metrics.Granularity,
        clock: IReactorTime,
    ) -> None:
        self.pollers = list(pollers)
        self.definitions = metrics.families_for(granularity)
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """The declared families without samples, so registering never runs collect()."""
        return [empty_family(definition) for definition in self.definitions]

    def collect(self) -> Iterable[Metric]:
        reports = read_clusters(self.pollers, self.clock.seconds())
        return merge(_families_of(reports), self.definitions)
