"""Turn a cluster's lag view and health into Prometheus metric families.

Lag families are built once per cycle (off the reactor thread) and kept with the
snapshot; health families are a handful of samples built when asked.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from . import metrics
from .model import ClusterHealth, LagView, PartitionLag

Families = Dict[str, Metric]
Labels = Tuple[Tuple[str, str], ...]


def empty_family(definition: metrics.MetricDef) -> Metric:
    """A family with no samples yet, named as prometheus_client expects."""
    # Counters are declared with their `_total` name; the family name drops it, as
    # prometheus_client's CounterMetricFamily does, so both formats render correctly.
    name = definition.name
    if definition.type == "counter":
        name = name[: -len("_total")]
    return Metric(name, definition.help, definition.type)


class _Builder:
    """Collects samples per family, each prefixed with the cluster's labels."""

    def __init__(self, base: Labels, definitions: Sequence[metrics.MetricDef]) -> None:
        self.base = dict(base)
        self.families: Families = {
            definition.name: empty_family(definition) for definition in definitions
        }

    def add(self, definition: metrics.MetricDef, values: Sequence[str], value: float) -> None:
        family = self.families.get(definition.name)
        if family is None:  # not reported at this granularity
            return
        labels = dict(self.base)
        labels.update(zip(definition.labels, values))
        family.samples.append(Sample(definition.name, labels, float(value), None, None, None))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _partition_rows(builder: _Builder, row: PartitionLag) -> None:
    ids = (row.group, row.topic, str(row.partition))
    member = ids + (row.member.host, row.member.consumer_id, row.member.client_id)
    builder.add(metrics.GROUP_OFFSET, member, row.committed)
    builder.add(metrics.GROUP_LAG, member, row.lag)
    if row.lag_seconds is not None:
        flags = (_flag(row.compacted), _flag(row.data_loss))
        builder.add(metrics.GROUP_LAG_SECONDS, member + flags, row.lag_seconds)
    builder.add(metrics.GROUP_MESSAGES_LOST, ids, row.messages_lost)
    builder.add(metrics.GROUP_RETENTION_MARGIN, ids, row.retention_margin)
    builder.add(metrics.GROUP_LAG_RETENTION_RATIO, ids, row.retention_ratio)
    if row.offset_out_of_range > 0:  # present only for such partitions
        builder.add(metrics.GROUP_OFFSET_OUT_OF_RANGE, ids, row.offset_out_of_range)


def _group_rows(builder: _Builder, view: LagView) -> None:
    for group in view.groups:
        key = (group.group,)
        builder.add(metrics.GROUP_STATE, key, metrics.group_state_value(group.state))
        builder.add(metrics.GROUP_MEMBERS, key, group.members)
        if group.max_lag is not None:
            builder.add(metrics.GROUP_MAX_LAG, key, group.max_lag)
        if group.sum_lag is not None:
            builder.add(metrics.GROUP_SUM_LAG, key, group.sum_lag)
        if group.max_lag_seconds is not None:
            builder.add(metrics.GROUP_MAX_LAG_SECONDS, key, group.max_lag_seconds)
        for topic, total in sorted(group.topic_sum_lag.items()):
            builder.add(metrics.GROUP_TOPIC_SUM_LAG, (group.group, topic), total)


def _share_rows(builder: _Builder, view: LagView, granularity: metrics.Granularity) -> None:
    if granularity is metrics.Granularity.PARTITION:
        for row in view.share_partitions:
            ids = (row.group, row.topic, str(row.partition))
            builder.add(metrics.SHARE_GROUP_START_OFFSET, ids, row.start_offset)
            builder.add(metrics.SHARE_GROUP_LAG, ids, row.lag)
            if row.lag_seconds is not None:
                builder.add(metrics.SHARE_GROUP_LAG_SECONDS, ids, row.lag_seconds)
    for group in view.share_groups:
        key = (group.group,)
        builder.add(metrics.SHARE_GROUP_STATE, key, metrics.share_group_state_value(group.state))
        builder.add(metrics.SHARE_GROUP_MEMBERS, key, group.members)
        if group.sum_lag is not None:
            builder.add(metrics.SHARE_GROUP_SUM_LAG, key, group.sum_lag)
        if group.max_lag_seconds is not None:
            builder.add(metrics.SHARE_GROUP_MAX_LAG_SECONDS, key, group.max_lag_seconds)


def lag_families(view: LagView, base: Labels, granularity: metrics.Granularity) -> Families:
    """All lag families of one cluster, keyed by metric name."""
    builder = _Builder(
        base,
        [
            definition
            for definition in metrics.families_for(granularity)
            if definition in metrics.LAG_FAMILIES
        ],
    )
    for (topic, partition), latest in sorted(view.latest.items()):
        builder.add(metrics.PARTITION_LATEST_OFFSET, (topic, str(partition)), latest)
    for (topic, partition), earliest in sorted(view.earliest.items()):
        builder.add(metrics.PARTITION_EARLIEST_OFFSET, (topic, str(partition)), earliest)
    if granularity is metrics.Granularity.PARTITION:
        for row in view.partitions:
            _partition_rows(builder, row)
    _group_rows(builder, view)
    _share_rows(builder, view, granularity)
    builder.add(metrics.COMPACTION_PARTITIONS, (), view.compaction_partitions)
    builder.add(metrics.DATA_LOSS_PARTITIONS, (), view.data_loss_partitions)
    builder.add(metrics.OFFSET_OUT_OF_RANGE_PARTITIONS, (), view.offset_out_of_range_partitions)
    for reason, count in sorted(view.skipped.items()):
        builder.add(metrics.SKIPPED_PARTITIONS, (reason,), count)
    for reason, count in sorted(view.skipped_groups.items()):
        builder.add(metrics.SKIPPED_GROUPS, (reason,), count)
    return builder.families


def health_families(health: ClusterHealth, base: Labels, fresh: bool) -> Families:
    """The exporter's own families for one cluster; present even when its data is stale."""
    builder = _Builder(base, metrics.HEALTH_FAMILIES)
    builder.add(metrics.UP, (), 1 if fresh else 0)
    if health.last_duration is not None:
        builder.add(metrics.POLL_TIME_MS, (), health.last_duration * 1000.0)
        builder.add(metrics.SCRAPE_DURATION, (), health.last_duration)
    if health.last_success is not None:
        builder.add(metrics.LAST_UPDATE, (), health.last_success)
    builder.add(metrics.CYCLE_FAILURES, (), health.failures_total)
    builder.add(metrics.SKIPPED_TICKS, (), health.skipped_ticks)
    cache = health.cache
    builder.add(metrics.TIMESTAMP_CACHE_ENTRIES, (), cache.entries)
    builder.add(metrics.TIMESTAMP_CACHE_HITS, (), cache.hits)
    builder.add(metrics.TIMESTAMP_CACHE_MISSES, (), cache.misses)
    builder.add(metrics.TIMESTAMP_FETCH_ERRORS, (), cache.fetch_errors)
    return builder.families


def merge(parts: Iterable[Families], definitions: Sequence[metrics.MetricDef]) -> List[Metric]:
    """One family per name across clusters: the text format allows a name only once."""
    parts = list(parts)
    merged: List[Metric] = []
    for definition in definitions:
        family = empty_family(definition)
        for part in parts:
            own = part.get(definition.name)
            if own is not None:
                family.samples.extend(own.samples)
        if family.samples:
            merged.append(family)
    return merged
