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
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

from .model import (
    TP,
    ClusterData,
    RecordKey,
    ShareGroupLag,
    ShareOffset,
    SharePartitionLag,
)

# As in lag: the reasons a partition's figures are left out.
WATERMARK_UNAVAILABLE = "watermark_unavailable"
TIMESTAMP_UNAVAILABLE = "timestamp_unavailable"


def share_offset_lag(offset: ShareOffset, latest: Optional[int]) -> Optional[int]:
    """The broker's lag where it gave one, else max(0, latest - start); None if neither is known."""
    if offset.lag is not None and offset.lag >= 0:
        return offset.lag
    if latest is None:
        return None
    return max(0, latest - offset.start_offset)


def share_sampled_offset(start: int, earliest: Optional[int]) -> int:
    """The offset whose record age is the time lag: the start offset, or the earliest retained
    record when retention removed the records at the start offset."""
    return start if earliest is None or start >= earliest else earliest


def share_time_lag(lag: int, record_ms: Optional[int], now: float) -> Optional[float]:
    """Seconds behind: 0 when lag is 0, None when the record's age is unknown, never negative."""
    if lag == 0:
        return 0.0
    if record_ms is None:
        return None
    return max(0.0, now - record_ms / 1000.0)


def _lagging_key(data: ClusterData, tp: TP, offset: ShareOffset) -> Optional[RecordKey]:
    latest = data.latest.get(tp)
    lag = share_offset_lag(offset, latest)
    # The sampler needs the partition's end offset, and a record exists only below it.
    if not lag or latest is None or offset.start_offset >= latest:
        return None
    return (tp[0], tp[1], share_sampled_offset(offset.start_offset, data.earliest.get(tp)))


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


# (lag, record timestamp in ms or None, now) -> seconds behind, or None when unknown
TimeLag = Callable[[int, Optional[int], float], Optional[float]]


def compute_share_lag(
    data: ClusterData,
    timestamps: Optional[Mapping[RecordKey, Optional[int]]],
    now: float,
    time_lag: TimeLag = share_time_lag,
) -> Tuple[Tuple[SharePartitionLag, ...], Tuple[ShareGroupLag, ...], Dict[str, int]]:
    """Every share group's partition rows and aggregates, and the partitions left out by reason.

    `timestamps` is None when timestamp sampling is off: no time lag, none counted missing.
    `time_lag` turns a look-up answer into seconds: lag.compute_lag passes lag.time_lag, so
    a share group reads the sampler's answers exactly as a consumer group does.
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
