"""Turn a cluster's lag view and health into metric families of compact rows.

A family is its definition, the cluster's labels and one row per sample: the values of
the definition's own labels (tuples shared by the families of one partition row) and the
sample value. No label dict or prometheus_client object is made per sample; the renderer
writes lines straight from the rows, and `Family.metric()` makes the prometheus_client
family for a registry that asks (`collector.LagCollector`).

Lag families are built once per cycle (off the reactor thread) and kept with the
snapshot; health families are a handful of samples built when asked.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, NamedTuple, Sequence, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from . import metrics
from .model import ClusterHealth, LagView, PartitionLag

Labels = Tuple[Tuple[str, str], ...]
# One sample: the values of its definition's labels, in their order, and its value.
Row = Tuple[Tuple[str, ...], float]


class Family(NamedTuple):
    """One metric family of one cluster."""

    definition: metrics.MetricDef
    # the cluster's labels, which every sample carries first
    base: Labels
    rows: List[Row]

    def metric(self) -> Metric:
        """The prometheus_client family with these samples."""
        family = empty_family(self.definition)
        names = self.definition.labels
        for values, value in self.rows:
            labels = dict(self.base)
            labels.update(zip(names, values))
            family.samples.append(Sample(self.definition.name, labels, value, None, None, None))
        return family


Families = Dict[str, Family]


def empty_family(definition: metrics.MetricDef) -> Metric:
    """A family with no samples yet, named as prometheus_client expects."""
    # Counters are declared with their `_total` name; the family name drops it, as
    # prometheus_client's CounterMetricFamily does, so both formats render correctly.
    name = definition.name
    if definition.type == "counter":
        name = name[: -len("_total")]
    return Metric(name, definition.help, definition.type)


class _Builder:
    """Collects the rows of each family of one cluster."""

    def __init__(self, base: Labels, definitions: Sequence[metrics.MetricDef]) -> None:
        self.families: Families = {
            definition.name: Family(definition, base, []) for definition in definitions
        }

    def add(self, definition: metrics.MetricDef, values: Tuple[str, ...], value: float) -> None:
        family = self.families.get(definition.name)
        if family is not None:  # else not reported at this granularity
            family.rows.append((values, float(value)))

    def extend(self, definition: metrics.MetricDef, rows: Iterable[Row]) -> None:
        family = self.families.get(definition.name)
        if family is not None:
            family.rows.extend(rows)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _partition_rows(builder: _Builder, rows: Sequence[PartitionLag]) -> None:
    # One list per family, made in one pass each: these are the bulk of the series. The
    # label tuples of a partition row are shared by its families.
    ids = [(row.group, row.topic, str(row.partition)) for row in rows]
    member = [key + (row.member.host, row.member.consumer_id, row.member.client_id)
              for key, row in zip(ids, rows)]
    builder.extend(metrics.GROUP_OFFSET, [
        (key, float(row.committed)) for key, row in zip(member, rows)])
    builder.extend(metrics.GROUP_LAG, [(key, float(row.lag)) for key, row in zip(member, rows)])
    builder.extend(metrics.GROUP_LAG_SECONDS, [
        (key + (_flag(row.compacted), _flag(row.data_loss)), float(row.lag_seconds))
        for key, row in zip(member, rows) if row.lag_seconds is not None])
    builder.extend(metrics.GROUP_MESSAGES_LOST, [
        (key, float(row.messages_lost)) for key, row in zip(ids, rows)])
    builder.extend(metrics.GROUP_RETENTION_MARGIN, [
        (key, float(row.retention_margin)) for key, row in zip(ids, rows)])
    builder.extend(metrics.GROUP_LAG_RETENTION_RATIO, [
        (key, float(row.retention_ratio)) for key, row in zip(ids, rows)])
    builder.extend(metrics.GROUP_OFFSET_OUT_OF_RANGE, [  # present only for such partitions
        (key, float(row.offset_out_of_range)) for key, row in zip(ids, rows)
        if row.offset_out_of_range > 0])


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
    for definition, offsets in ((metrics.PARTITION_LATEST_OFFSET, view.latest),
                                (metrics.PARTITION_EARLIEST_OFFSET, view.earliest)):
        builder.extend(definition, [((topic, str(partition)), float(offset))
                                    for (topic, partition), offset in sorted(offsets.items())])
    if granularity is metrics.Granularity.PARTITION:
        _partition_rows(builder, view.partitions)
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
    """One prometheus_client family per name across clusters: the text format allows a name
    only once."""
    parts = list(parts)
    merged: List[Metric] = []
    for definition in definitions:
        family = empty_family(definition)
        for part in parts:
            own = part.get(definition.name)
            if own is not None:
                family.samples.extend(own.metric().samples)
        if family.samples:
            merged.append(family)
    return merged
