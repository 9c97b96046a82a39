"""The pure lag of share groups (KIP-932): start offsets + watermarks + timestamps + now -> lag.

A share group has no committed offset: its members acknowledge records one by one, and the
share-partition start offset is the first record not yet acknowledged (or archived). Its
lag is the one DescribeShareGroupOffsets v1+ reports where the broker gave it (it leaves out
records acknowledged past the start offset), else latest - start offset. Its time lag is the
age of the record at the start offset: the oldest record the group still has to deliver.

No I/O, no clock; unknown stays unknown (None or left out), never 0.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Set, Tuple

from .record_age import (
    TIMESTAMP_UNAVAILABLE,
    WATERMARK_UNAVAILABLE,
    Timestamps,
    sampled_offset,
    time_lag,
)
from .model import (
    TP,
    ClusterData,
    RecordKey,
    ShareGroupLag,
    ShareOffset,
    SharePartitionLag,
)



def share_offset_lag(offset: ShareOffset, latest: Optional[int]) -> Optional[int]:
    """The broker's lag where it gave one, else max(0, latest - start); None if neither is known."""
    if offset.lag is not None and offset.lag >= 0:
        return offset.lag
    if latest is None:
        return None
    return max(0, latest - offset.start_offset)


def _lagging_key(data: ClusterData, tp: TP, offset: ShareOffset) -> Optional[RecordKey]:
    latest = data.latest.get(tp)
    lag = share_offset_lag(offset, latest)
    # The sampler needs the partition's end offset, and a record exists only below it.
    if not lag or latest is None or offset.start_offset >= latest:
        return None
    return (tp[0], tp[1], _sampled(offset.start_offset, data.earliest.get(tp)))


def share_timestamp_requests(data: ClusterData) -> Set[RecordKey]:
    """The records whose timestamps the share groups' time lag needs (lagging partitions only)."""
    wanted: Set[RecordKey] = set()
    for name, offsets in data.share_offsets.items():
        if name not in data.share_groups:
            continue
        for tp, offset in offsets.items():
            key = _lagging_key(data, tp, offset)
            if key is not None:
                wanted.add(key)
    return wanted


def _sampled(start: int, earliest: Optional[int]) -> int:
    # Without a known earliest offset the start offset is all there is to date.
    return start if earliest is None else sampled_offset(start, earliest)


def compute_share_lag(
    data: ClusterData,
    timestamps: Optional[Timestamps],
    now: float,
) -> Tuple[Tuple[SharePartitionLag, ...], Tuple[ShareGroupLag, ...], Dict[str, int]]:
    """Every share group's partition rows and aggregates, and the partitions left out by reason.

    `timestamps` is None when timestamp sampling is off: no time lag, none counted missing.
    A look-up answer becomes seconds exactly as for a consumer group (record_age.time_lag).
    """
    skipped: Dict[str, int] = defaultdict(int)
    partitions: List[SharePartitionLag] = []
    groups: List[ShareGroupLag] = []
    for name in sorted(data.share_groups):
        info = data.share_groups[name]
        rows: List[SharePartitionLag] = []
        for tp, offset in sorted(data.share_offsets.get(name, {}).items()):
            lag = share_offset_lag(offset, data.latest.get(tp))
            if lag is None:
                skipped[WATERMARK_UNAVAILABLE] += 1
                continue
            seconds: Optional[float] = None
            if timestamps is not None:
                key = _lagging_key(data, tp, offset)
                seconds = time_lag(lag, None if key is None else timestamps.get(key), now)
                if seconds is None:
                    skipped[TIMESTAMP_UNAVAILABLE] += 1
            rows.append(SharePartitionLag(name, tp[0], tp[1], offset.start_offset, lag, seconds))
        partitions.extend(rows)
        known = [r.lag_seconds for r in rows if r.lag_seconds is not None]
        # As for consumer groups: zeros of caught-up partitions do not stand for lagging ones.
        lagging = [r for r in rows if r.lag > 0]
        if lagging and all(r.lag_seconds is None for r in lagging):
            known = []
        groups.append(ShareGroupLag(
            group=name,
            state=info.state,
            members=info.members,
            sum_lag=sum(r.lag for r in rows) if rows else None,
            max_lag_seconds=max(known, default=None),
        ))
    return tuple(partitions), tuple(groups), dict(skipped)
