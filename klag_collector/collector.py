"""A prometheus_client Collector over the pollers' current snapshots.

`collect()` does no Kafka call and no lag computation: it joins families that each cycle
already built, so a host daemon can register it in any CollectorRegistry.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime

from . import metrics
from .families import Families, empty_family, health_families, merge
from .poller import ClusterPoller


class LagCollector(Collector):
    """Yields every cluster's lag families (fresh clusters only) and health families."""

    def __init__(
        self,
        pollers: Sequence[ClusterPoller],
        granularity: metrics.Granularity,
        clock: IReactorTime,
    ) -> None:
        self.pollers = list(pollers)
        self.defs = metrics.families_for(granularity)
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """The declared families without samples, so registering never runs collect()."""
        return [empty_family(d) for d in self.defs]

    def collect(self) -> Iterable[Metric]:
        now = self.clock.seconds()
        parts: List[Families] = []
        for poller in self.pollers:
            snapshot = poller.fresh_snapshot(now)
            parts.append(health_families(poller.health, poller.base_labels, snapshot is not None))
            if snapshot is not None:
                parts.append(snapshot.families)
        return merge(parts, self.defs)
