"""The pure lag core: cluster data + record timestamps + now -> lag figures.

No I/O, no clock: `now` is passed in, so every figure is reproducible in a test.
Unknown stays unknown (None, or left out and counted), never 0. A committed offset past
the log end is not "caught up" either: its lag is 0, its time lag unknown, and it is reported
as out of range (committed - latest), a known reason of its own, not counted as skipped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Set

from .record_age import (
    TIMESTAMP_UNAVAILABLE,
    WATERMARK_UNAVAILABLE,
    Timestamps,
    sampled_offset,
    time_lag,
)
from .share_lag import compute_share_lag, share_timestamp_requests
from .model import (
    NO_MEMBER,
    TP,
    ClusterData,
    GroupInfo,
    GroupLag,
    LagView,
    PartitionLag,
    RecordKey,
)



def offset_lag(committed: int, latest: int) -> int:
    """Messages between the committed offset and the end; never negative."""
    return max(0, latest - committed)


def offset_out_of_range(committed: int, latest: int) -> int:
    """How far the committed offset is past the log end (topic recreated, offsets altered); else 0.

    Kafka answers such a fetch with OFFSET_OUT_OF_RANGE and the consumer resets, so where it
    will read next, and how old that record is, are unknown until it does.
    """
    return max(0, committed - latest)


def timestamp_requests(data: ClusterData) -> Set[RecordKey]:
    """The records whose timestamps the time lag of this cycle needs.

    Not for caught-up partitions (their time lag is 0), nor for out-of-range ones (there is
    no record at the committed offset, and the time lag is not reported).
    """
    wanted: Set[RecordKey] = set()
    for name, offsets in data.committed.items():
        if name not in data.groups:  # compute_lag reports no row for it
            continue
        for (topic, partition), committed in offsets.items():
            tp = (topic, partition)
            latest = data.latest.get(tp)
            earliest = data.earliest.get(tp)
            if latest is None or earliest is None:
                continue
            if offset_out_of_range(committed, latest) or offset_lag(committed, latest) == 0:
                continue
            wanted.add((topic, partition, sampled_offset(committed, earliest)))
    # Share groups: the record at each lagging share-partition's start offset (share_lag).
    return wanted | share_timestamp_requests(data)


def retention_ratio(lag: int, earliest: int, latest: int) -> float:
    """Lag as a percentage of what the partition retains; 0 when it retains nothing."""
    retained = latest - earliest
    if retained <= 0:
        return 0.0
    return lag * 100.0 / retained


def compute_lag(
    data: ClusterData, timestamps: Optional[Timestamps], now: float
) -> LagView:
    """Compute every partition's and group's lag.

    `timestamps` is None when timestamp sampling is off: no time lag is computed and
    none is counted as missing.
    """
    skipped: Dict[str, int] = defaultdict(int)
    partitions: List[PartitionLag] = []
    groups: List[GroupLag] = []
    for name in sorted(data.groups):
        info = data.groups[name]
        rows: List[PartitionLag] = []
        for tp, committed in sorted(data.committed.get(name, {}).items()):
            row = _partition_lag(data, name, info, tp, committed, timestamps, now, skipped)
            if row is not None:
                rows.append(row)
        partitions.extend(rows)
        groups.append(_aggregate(name, info, rows))
    share_partitions, share_groups, share_skipped = compute_share_lag(
        data, timestamps, now
    )
    for reason, count in share_skipped.items():
        skipped[reason] += count
    return LagView(
        partitions=tuple(partitions),
        groups=tuple(groups),
        earliest=dict(data.earliest),
        latest=dict(data.latest),
        skipped=dict(skipped),
        skipped_groups=dict(data.skipped_groups),
        compaction_partitions=len([row for row in partitions if row.compacted]),
        data_loss_partitions=len([row for row in partitions if row.data_loss]),
        offset_out_of_range_partitions=len([row for row in partitions if row.offset_out_of_range]),
        share_partitions=share_partitions,
        share_groups=share_groups,
    )


def _partition_lag(
    data: ClusterData,
    group: str,
    info: GroupInfo,
    tp: TP,
    committed: int,
    timestamps: Optional[Timestamps],
    now: float,
    skipped: Dict[str, int],
) -> Optional[PartitionLag]:
    """One group's figures on one partition; None (counted in *skipped*) without watermarks."""
    topic, partition = tp
    earliest = data.earliest.get(tp)
    latest = data.latest.get(tp)
    if earliest is None or latest is None:
        skipped[WATERMARK_UNAVAILABLE] += 1
        return None
    lag = offset_lag(committed, latest)
    out_of_range = offset_out_of_range(committed, latest)
    seconds: Optional[float] = None
    # Out of range: the time lag is unknown for a known reason, reported by its own gauge,
    # so it is neither computed (no 0 claiming "caught up") nor counted as unavailable.
    if timestamps is not None and not out_of_range:
        key = (topic, partition, sampled_offset(committed, earliest))
        seconds = time_lag(lag, timestamps.get(key), now)
        if seconds is None:
            skipped[TIMESTAMP_UNAVAILABLE] += 1
    return PartitionLag(
        group=group,
        topic=topic,
        partition=partition,
        member=info.assignments.get(tp, NO_MEMBER),
        committed=committed,
        earliest=earliest,
        latest=latest,
        lag=lag,
        lag_seconds=seconds,
        messages_lost=max(0, earliest - committed),
        retention_margin=committed - earliest,
        retention_ratio=retention_ratio(lag, earliest, latest),
        data_loss=committed < earliest,
        compacted=topic in data.compacted_topics,
        offset_out_of_range=out_of_range,
    )


def _aggregate(name: str, info: GroupInfo, rows: Iterable[PartitionLag]) -> GroupLag:
    rows = list(rows)
    topic_sums: Dict[str, int] = defaultdict(int)
    for row in rows:
        topic_sums[row.topic] += row.lag
    known_seconds = [r.lag_seconds for r in rows if r.lag_seconds is not None]
    # Caught-up partitions know their time lag (0) for free; if no lagging partition's
    # time lag is known, a max of those zeros would claim a lagging group is caught up.
    # Out-of-range partitions count as lag 0 in max_lag and sum_lag and have no time lag,
    # so max_lag_seconds ignores them.
    lagging = [r for r in rows if r.lag > 0]
    if lagging and all(r.lag_seconds is None for r in lagging):
        known_seconds = []
    return GroupLag(
        group=name,
        state=info.state,
        members=info.members,
        # A group with no known partition has no max or sum: leaving them out beats a 0
        # that would read as "caught up".
        max_lag=max((r.lag for r in rows), default=None),
        sum_lag=sum(r.lag for r in rows) if rows else None,
        max_lag_seconds=max(known_seconds, default=None),
        topic_sum_lag=dict(topic_sums),
        group_type=info.group_type,
    )
