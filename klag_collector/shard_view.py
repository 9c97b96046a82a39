"""A cluster's snapshot cut to the shards its replica owns now (pure; a worker thread runs it).

A sharded read asks only about the groups of the shards it was made for, but also for the
watermarks of the partitions those groups consume on topics of other shards: their lag needs
them. Those watermark series belong to their topic's replica, so every snapshot is cut to the
topics it owns. When shards were revoked since the read, their groups' rows go too, and the
cluster-wide counts are made again from the rows that stay; the skipped-partition and
skipped-group counts cannot be split by shard, so they are left out (unknown, not 0) until
the next cycle counts them afresh.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, Mapping

from . import families, metrics
from .families import Families, Labels
from .model import TP, LagView
from .poller import ClusterSnapshot
from .sharding import Shards


def restrict(
    snapshot: ClusterSnapshot,
    read: Shards,
    owned: Shards,
    base: Labels,
    granularity: metrics.Granularity,
) -> ClusterSnapshot:
    """*snapshot*, read for the shards *read*, as a replica owning *owned* reports it."""
    keep = read & owned
    if owned.covers(read):  # no shard of the read was revoked: its groups are all owned
        view = replace(snapshot.view, earliest=_of_topics(snapshot.view.earliest, keep),
                       latest=_of_topics(snapshot.view.latest, keep))
        cut = _watermarks_cut(snapshot.families, view, base, granularity)
        return ClusterSnapshot(view, cut, snapshot.taken_at)
    view = _owned_view(snapshot.view, keep)
    return ClusterSnapshot(view, families.lag_families(view, base, granularity),
                           snapshot.taken_at)


def _of_topics(offsets: Mapping[TP, int], keep: Shards) -> Dict[TP, int]:
    return {tp: offset for tp, offset in offsets.items() if keep.owns(tp[0])}


def _is_per_topic(definition: metrics.MetricDef) -> bool:
    """A family whose rows are a topic's, not a group's: the partition watermarks."""
    return metrics.TOPIC in definition.labels and metrics.GROUP not in definition.labels


def _watermarks_cut(
    found: Families, view: LagView, base: Labels, granularity: metrics.Granularity
) -> Families:
    """*found*, its families of topics made again from *view* (whose watermarks are cut);
    the others are the same objects (the renderer keeps their lines)."""
    # Built from the watermarks alone: a few thousand rows, not the groups' tens of thousands.
    alone = replace(view, partitions=(), groups=(), share_partitions=(), share_groups=())
    made = families.lag_families(alone, base, granularity)
    return {name: made[name] if _is_per_topic(family.definition) else family
            for name, family in found.items()}


def _owned_view(view: LagView, keep: Shards) -> LagView:
    """The view without the rows of groups and topics outside *keep*."""
    partitions = tuple(row for row in view.partitions if keep.owns(row.group))
    return replace(
        view,
        partitions=partitions,
        groups=tuple(group for group in view.groups if keep.owns(group.group)),
        earliest=_of_topics(view.earliest, keep),
        latest=_of_topics(view.latest, keep),
        skipped={},
        skipped_groups={},
        compaction_partitions=sum(1 for row in partitions if row.compacted),
        data_loss_partitions=sum(1 for row in partitions if row.data_loss),
        offset_out_of_range_partitions=sum(1 for row in partitions if row.offset_out_of_range),
        share_partitions=tuple(row for row in view.share_partitions if keep.owns(row.group)),
        share_groups=tuple(group for group in view.share_groups if keep.owns(group.group)),
    )
