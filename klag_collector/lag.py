"""The pure lag core: cluster data + record timestamps + now -> lag figures.

No I/O, no clock: `now` is passed in, so every figure is reproducible in a test.
Unknown stays unknown (None, or left out and counted), never 0. A committed offset past
the log end is not "caught up" either: its lag is 0, its time lag unknown, and it is reported
as out of range (committed - latest), a known reason of its own, not counted as skipped.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Set

from .record_age import (
    TIMESTAMP_UNAVAILABLE,
    WATERMARK_UNAVAILABLE,
    RecordTime,
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
    Member,
    PartitionLag,
    RecordKey,
)


def timestamp_requests(data: ClusterData) -> Set[RecordKey]:
    """The records whose timestamps the time lag of this cycle needs.

    Not for caught-up partitions (their time lag is 0), nor for out-of-range ones (there is
    no record at the committed offset, and the time lag is not reported): only where
    committed < latest.
    """
    wanted: Set[RecordKey] = set()
    earliest_of, latest_of = data.earliest.get, data.latest.get
    for name, offsets in data.committed.items():
        if name not in data.groups:  # compute_lag reports no row for it
            continue
        for tp, committed in offsets.items():
            latest = latest_of(tp)
            earliest = earliest_of(tp)
            if latest is None or earliest is None or committed >= latest:
                continue
            wanted.add((tp[0], tp[1], sampled_offset(committed, earliest)))
    # Share groups: the record at each lagging share-partition's start offset (share_lag).
    return wanted | share_timestamp_requests(data)


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
        rows = _group_rows(data, name, info, timestamps, now, skipped)
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


def _group_rows(
    data: ClusterData,
    group: str,
    info: GroupInfo,
    timestamps: Optional[Timestamps],
    now: float,
    skipped: Dict[str, int],
) -> List[PartitionLag]:
    """One group's rows; a partition without watermarks has none and is counted in *skipped*."""
    rows: List[PartitionLag] = []
    earliest_of, latest_of = data.earliest.get, data.latest.get
    member_of = info.assignments.get
    compacted = data.compacted_topics
    for tp, committed in sorted(data.committed.get(group, {}).items()):
        earliest = earliest_of(tp)
        latest = latest_of(tp)
        if earliest is None or latest is None:
            skipped[WATERMARK_UNAVAILABLE] += 1
            continue
        row = partition_lag(group, tp, committed, earliest, latest, member_of(tp, NO_MEMBER),
                            tp[0] in compacted, timestamps, now)
        # Out of range: the time lag is unknown for a known reason, reported by its own
        # gauge, so it is neither computed nor counted as unavailable.
        if row.lag_seconds is None and timestamps is not None and not row.offset_out_of_range:
            skipped[TIMESTAMP_UNAVAILABLE] += 1
        rows.append(row)
    return rows


def partition_lag(
    group: str,
    tp: TP,
    committed: int,
    earliest: int,
    latest: int,
    member: Member,
    compacted: bool,
    timestamps: Optional[Timestamps],
    now: float,
) -> PartitionLag:
    """One group's figures on one partition.

    lag: messages between the committed offset and the end, never negative.
    offset_out_of_range: how far the committed offset is past the log end (topic recreated,
    offsets altered), else 0; Kafka answers a fetch there with OFFSET_OUT_OF_RANGE and the
    consumer resets, so where it will read next, and how old that record is, are unknown.
    retention_ratio: lag as a percentage of what the partition retains; 0 when it retains
    nothing. Written out inline: this runs once per row of every cycle.
    """
    topic, partition = tp
    lag = latest - committed
    out_of_range = 0
    if lag < 0:
        out_of_range, lag = -lag, 0
    seconds: Optional[float] = None
    if timestamps is not None and not out_of_range:
        # A caught-up row's record is never asked for (timestamp_requests); time_lag says 0.
        record: RecordTime = None
        if lag:
            record = timestamps.get((topic, partition, sampled_offset(committed, earliest)))
        seconds = time_lag(lag, record, now)
    retained = latest - earliest
    return PartitionLag(
        group, topic, partition, member, committed, earliest, latest, lag, seconds,
        earliest - committed if committed < earliest else 0,  # messages_lost
        committed - earliest,  # retention_margin
        lag * 100.0 / retained if retained > 0 else 0.0,  # retention_ratio
        committed < earliest,  # data_loss
        compacted,
        out_of_range,
    )


def _aggregate(name: str, info: GroupInfo, rows: Sequence[PartitionLag]) -> GroupLag:
    topic_sums: Dict[str, int] = defaultdict(int)
    for row in rows:
        topic_sums[row.topic] += row.lag
    lags = [row.lag for row in rows]
    known_seconds = [r.lag_seconds for r in rows if r.lag_seconds is not None]
    # Caught-up partitions know their time lag (0) for free; if no lagging partition's
    # time lag is known, a max of those zeros would claim a lagging group is caught up.
    # Out-of-range partitions count as lag 0 in max_lag and sum_lag and have no time lag,
    # so max_lag_seconds ignores them.
    if any(lags) and all(r.lag_seconds is None for r in rows if r.lag > 0):
        known_seconds = []
    return GroupLag(
        group=name,
        state=info.state,
        members=info.members,
        # A group with no known partition has no max or sum: leaving them out beats a 0
        # that would read as "caught up".
        max_lag=max(lags, default=None),
        sum_lag=sum(lags) if rows else None,
        max_lag_seconds=max(known_seconds, default=None),
        topic_sum_lag=dict(topic_sums),
        group_type=info.group_type,
    )
