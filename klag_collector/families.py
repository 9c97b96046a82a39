"""Turn a cluster's lag view and health into Prometheus metric families.

Lag families are built once per cycle (off the reactor thread) and kept with the
snapshot; health families are a handful of samples built when asked.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from . import metrics as m
from .model import ClusterHealth, LagView, PartitionLag

Families = Dict[str, Metric]
Labels = Tuple[Tuple[str, str], ...]


def empty_family(d: m.MetricDef) -> Metric:
    """A family with no samples yet, named as prometheus_client expects."""
    # Counters are declared with their `_total` name; the family name drops it, as
    # prometheus_client's CounterMetricFamily does, so both formats render correctly.
    name = d.name[: -len("_total")] if d.type == "counter" else d.name
    return Metric(name, d.help, d.type)


class _Builder:
    """Collects samples per family, each prefixed with the cluster's labels."""

    def __init__(self, base: Labels, defs: Sequence[m.MetricDef]) -> None:
        self.base = dict(base)
        self.families: Families = {d.name: empty_family(d) for d in defs}

    def add(self, d: m.MetricDef, values: Sequence[str], value: float) -> None:
        family = self.families.get(d.name)
        if family is None:  # not reported at this granularity
            return
        labels = dict(self.base)
        labels.update(zip(d.labels, values))
        family.samples.append(Sample(d.name, labels, float(value), None, None, None))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _partition_rows(b: _Builder, row: PartitionLag) -> None:
    ids = (row.group, row.topic, str(row.partition))
    member = ids + (row.member.host, row.member.consumer_id, row.member.client_id)
    b.add(m.GROUP_OFFSET, member, row.committed)
    b.add(m.GROUP_LAG, member, row.lag)
    if row.lag_seconds is not None:
        flags = (_flag(row.compacted), _flag(row.data_loss))
        b.add(m.GROUP_LAG_SECONDS, member + flags, row.lag_seconds)
    b.add(m.GROUP_MESSAGES_LOST, ids, row.messages_lost)
    b.add(m.GROUP_RETENTION_MARGIN, ids, row.retention_margin)
    b.add(m.GROUP_LAG_RETENTION_RATIO, ids, row.retention_ratio)


def lag_families(view: LagView, base: Labels, granularity: m.Granularity) -> Families:
    """All lag families of one cluster, keyed by metric name."""
    b = _Builder(base, [d for d in m.families_for(granularity) if d in m.LAG_FAMILIES])
    for (topic, partition), latest in sorted(view.latest.items()):
        b.add(m.PARTITION_LATEST_OFFSET, (topic, str(partition)), latest)
    for (topic, partition), earliest in sorted(view.earliest.items()):
        b.add(m.PARTITION_EARLIEST_OFFSET, (topic, str(partition)), earliest)
    if granularity is m.Granularity.PARTITION:
        for row in view.partitions:
            _partition_rows(b, row)
    for g in view.groups:
        key = (g.group,)
        b.add(m.GROUP_STATE, key, m.group_state_value(g.state))
        b.add(m.GROUP_MEMBERS, key, g.members)
        if g.max_lag is not None:
            b.add(m.GROUP_MAX_LAG, key, g.max_lag)
        if g.sum_lag is not None:
            b.add(m.GROUP_SUM_LAG, key, g.sum_lag)
        if g.max_lag_seconds is not None:
            b.add(m.GROUP_MAX_LAG_SECONDS, key, g.max_lag_seconds)
        for topic, total in sorted(g.topic_sum_lag.items()):
            b.add(m.GROUP_TOPIC_SUM_LAG, (g.group, topic), total)
    b.add(m.COMPACTION_PARTITIONS, (), view.compaction_partitions)
    b.add(m.DATA_LOSS_PARTITIONS, (), view.data_loss_partitions)
    for reason, count in sorted(view.skipped.items()):
        b.add(m.SKIPPED_PARTITIONS, (reason,), count)
    for reason, count in sorted(view.skipped_groups.items()):
        b.add(m.SKIPPED_GROUPS, (reason,), count)
    return b.families


def health_families(health: ClusterHealth, base: Labels, fresh: bool) -> Families:
    """The exporter's own families for one cluster; present even when its data is stale."""
    b = _Builder(base, m.HEALTH_FAMILIES)
    b.add(m.UP, (), 1 if fresh else 0)
    if health.last_duration is not None:
        b.add(m.POLL_TIME_MS, (), health.last_duration * 1000.0)
        b.add(m.SCRAPE_DURATION, (), health.last_duration)
    if health.last_success is not None:
        b.add(m.LAST_UPDATE, (), health.last_success)
    b.add(m.CYCLE_FAILURES, (), health.failures_total)
    b.add(m.SKIPPED_TICKS, (), health.skipped_ticks)
    cache = health.cache
    b.add(m.TIMESTAMP_CACHE_ENTRIES, (), cache.entries)
    b.add(m.TIMESTAMP_CACHE_HITS, (), cache.hits)
    b.add(m.TIMESTAMP_CACHE_MISSES, (), cache.misses)
    b.add(m.TIMESTAMP_FETCH_ERRORS, (), cache.fetch_errors)
    return b.families


def merge(parts: Iterable[Families], defs: Sequence[m.MetricDef]) -> List[Metric]:
    """One family per name across clusters: the text format allows a name only once."""
    parts = list(parts)
    merged: List[Metric] = []
    for d in defs:
        family = empty_family(d)
        for part in parts:
            own = part.get(d.name)
            if own is not None:
                family.samples.extend(own.samples)
        if family.samples:
            merged.append(family)
    return merged
