"""Turn a cluster's lag view and health into metric families of compact columns.

A family is its definition, the cluster's labels, and two columns, one entry per sample: the
values of the definition's own labels (tuples shared by the families of one partition row)
and the sample values (an array of doubles, 8 bytes a sample). No label dict or
prometheus_client object is made per sample; the renderer writes lines straight from the
columns, and `Family.metric()` makes the prometheus_client family for a registry that asks
(`collector.LagCollector`).

Lag families are built once per cycle (off the reactor thread) and kept with the
snapshot; health families are a handful of samples built when asked.
"""

from __future__ import annotations

import functools
from array import array
from typing import Dict, Iterable, List, NamedTuple, Sequence, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from . import metrics
from .model import ClusterHealth, LagView, PartitionLag

Labels = Tuple[Tuple[str, str], ...]
# The values of a sample's own labels, in its definition's order.
LabelValues = Tuple[str, ...]


def sample_values(values: Iterable[float] = ()) -> "array[float]":
    """A column of sample values."""
    return array("d", values)


class Family(NamedTuple):
    """One metric family of one cluster: sample i has labels[i] and values[i]."""

    definition: metrics.MetricDef
    # the cluster's labels, which every sample carries first
    base: Labels
    labels: List[LabelValues]
    values: "array[float]"

    def metric(self) -> Metric:
        """The prometheus_client family with these samples."""
        family = empty_family(self.definition)
        names = self.definition.labels
        for own, value in zip(self.labels, self.values):
            labels = dict(self.base)
            labels.update(zip(names, own))
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
    """Collects the samples of each family of one cluster."""

    def __init__(self, base: Labels, definitions: Sequence[metrics.MetricDef]) -> None:
        self.families: Families = {
            definition.name: Family(definition, base, [], sample_values())
            for definition in definitions
        }

    def add(self, definition: metrics.MetricDef, labels: LabelValues, value: float) -> None:
        family = self.families.get(definition.name)
        if family is not None:  # else not reported at this granularity
            family.labels.append(labels)
            family.values.append(value)

    def extend(self, definition: metrics.MetricDef, labels: Iterable[LabelValues],
               values: Iterable[float]) -> None:
        family = self.families.get(definition.name)
        if family is not None:
            family.labels.extend(labels)
            family.values.extend(values)

# A partition's label value, one string per partition number however many rows carry it.
_partition_label = functools.lru_cache(maxsize=1 << 16)(str)


# The compacted and data_loss label values of a row, by (compacted, data_loss).
_FLAGS = {(compacted, data_loss): ("true" if compacted else "false",
                                   "true" if data_loss else "false")
          for compacted in (False, True) for data_loss in (False, True)}


def _partition_rows(builder: _Builder, rows: Sequence[PartitionLag]) -> None:
    # One column pair per family, made in one pass each: these are the bulk of the series.
    # The label tuples of a partition row are shared by its families.
    ids = [(row.group, row.topic, _partition_label(row.partition)) for row in rows]
    member = [key + (row.member.host, row.member.consumer_id, row.member.client_id)
              for key, row in zip(ids, rows)]
    builder.extend(metrics.GROUP_OFFSET, member, [row.committed for row in rows])
    builder.extend(metrics.GROUP_LAG, member, [row.lag for row in rows])
    dated = [(key, row, row.lag_seconds) for key, row in zip(member, rows)
             if row.lag_seconds is not None]
    builder.extend(metrics.GROUP_LAG_SECONDS,
                   [key + _FLAGS[row.compacted, row.data_loss] for key, row, _ in dated],
                   [seconds for _, _, seconds in dated])
    builder.extend(metrics.GROUP_MESSAGES_LOST, ids, [row.messages_lost for row in rows])
    builder.extend(metrics.GROUP_RETENTION_MARGIN, ids, [row.retention_margin for row in rows])
    builder.extend(metrics.GROUP_LAG_RETENTION_RATIO, ids, [row.retention_ratio for row in rows])
    out_of_range = [i for i, row in enumerate(rows) if row.offset_out_of_range > 0]
    builder.extend(metrics.GROUP_OFFSET_OUT_OF_RANGE,  # present only for such partitions
                   [ids[i] for i in out_of_range],
                   [rows[i].offset_out_of_range for i in out_of_range])


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
            ids = (row.group, row.topic, _partition_label(row.partition))
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
        ordered = sorted(offsets.items())
        builder.extend(definition,
                       [(topic, _partition_label(partition)) for (topic, partition), _ in ordered],
                       [offset for _, offset in ordered])
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
