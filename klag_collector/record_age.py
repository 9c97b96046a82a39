"""How a record's age becomes a time lag, shared by the consumer- and share-group calculators.

A timestamp look-up answers, per (topic, partition, offset): the record's timestamp in ms,
None when its time is unknown, or CaughtUp when a read_committed consumer has nothing ahead
to receive. Pure: no I/O, no clock (`now` is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Union

from .model import RecordKey

# Reasons for leaving a partition's figures out, as they appear in the `reason` label.
WATERMARK_UNAVAILABLE = "watermark_unavailable"
TIMESTAMP_UNAVAILABLE = "timestamp_unavailable"


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """No record lies ahead for a read_committed consumer.

    From the offset to the partition's end there are only transaction markers, aborted
    records, or nothing compaction left: the group will receive nothing, so its time lag is
    0 although its offset lag (high watermark - committed) is not.
    """

    # Where the read reached (for logs and tests), never a time.
    at_offset: int


# One look-up's answer.
RecordTime = Union[int, CaughtUp, None]
# Look-up answers of a cycle.
Timestamps = Mapping[RecordKey, RecordTime]


def sampled_offset(position: int, earliest: int) -> int:
    """The offset whose record age is the time lag.

    Normally the group's position (the next record it reads: a committed offset, a share
    start offset); after data loss it will next read the earliest retained record, so that
    one's age counts.
    """
    return position if position >= earliest else earliest


def time_lag(lag: int, record_time: RecordTime, now: float) -> Optional[float]:
    """Seconds behind: 0 when caught up, None when the record's age is unknown.

    Caught up is an offset lag of 0, or a look-up that found only transaction markers and
    aborted records ahead (CaughtUp). A record stamped in the future (producer clock skew)
    counts as 0, not negative.
    """
    if lag == 0 or isinstance(record_time, CaughtUp):
        return 0.0
    if record_time is None:
        return None
    return max(0.0, now - record_time / 1000.0)
