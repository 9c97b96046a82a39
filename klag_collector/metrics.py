"""The one place where metric names, label names, types and HELP texts are defined.

The collector, the docs' metric table, the dashboard check and the config check for
clashing custom labels all read from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Tuple

# Label names.
CLUSTER = "cluster_name"
GROUP = "group"
TOPIC = "topic"
PARTITION = "partition"
MEMBER_HOST = "member_host"
CONSUMER_ID = "consumer_id"
CLIENT_ID = "client_id"
COMPACTION = "compaction_detected"
DATA_LOSS = "data_loss_detected"
REASON = "reason"

MEMBER_LABELS = (GROUP, TOPIC, PARTITION, MEMBER_HOST, CONSUMER_ID, CLIENT_ID)
GROUP_PARTITION_LABELS = (GROUP, TOPIC, PARTITION)


class Granularity(enum.Enum):
    """Which families a cluster reports: per partition, or only per group and topic."""

    TOPIC = "topic"
    PARTITION = "partition"


# Consumer group states as klag-exporter numbers them; HELP text is derived from this.
GROUP_STATES: Dict[str, int] = {
    "Unknown": 0,
    "PreparingRebalance": 1,
    "CompletingRebalance": 2,
    "Stable": 3,
    "Dead": 4,
    "Empty": 5,
    "Assigning": 6,
    "Reconciling": 7,
    # a streams group (KIP-1071) whose source topics are missing or wrongly partitioned
    "NotReady": 8,
}


# Share group states (KIP-932), numbered as the consumer group states of the same name.
SHARE_GROUP_STATES: Dict[str, int] = {
    name: GROUP_STATES[name] for name in ("Unknown", "Stable", "Dead", "Empty")
}


def share_group_state_value(state: str) -> int:
    """Map a broker-reported share group state to its number; anything unexpected is Unknown."""
    return SHARE_GROUP_STATES.get(state, SHARE_GROUP_STATES["Unknown"])


def group_state_value(state: str) -> int:
    """Map a broker-reported group state to its number; anything unexpected is Unknown."""
    return GROUP_STATES.get(state, GROUP_STATES["Unknown"])


@dataclass(frozen=True)
class MetricDef:
    """One metric family: its name, type, HELP text and labels besides the cluster's."""

    name: str
    help: str
    labels: Tuple[str, ...] = ()
    type: str = "gauge"
    partition_only: bool = False


def _d(name: str, help: str, labels: Tuple[str, ...] = (), **kw: object) -> MetricDef:
    return MetricDef(name, help, labels, **kw)  # type: ignore[arg-type]


PARTITION_LATEST_OFFSET = _d(
    "kafka_partition_latest_offset",
    "Latest offset (high watermark) of the partition.",
    (TOPIC, PARTITION),
)
PARTITION_EARLIEST_OFFSET = _d(
    "kafka_partition_earliest_offset",
    "Earliest retained offset (low watermark) of the partition.",
    (TOPIC, PARTITION),
)
GROUP_OFFSET = _d(
    "kafka_consumergroup_group_offset",
    "Committed offset of the consumer group on the partition.",
    MEMBER_LABELS,
    partition_only=True,
)
GROUP_LAG = _d(
    "kafka_consumergroup_group_lag",
    "Offset lag of the consumer group on the partition: max(0, latest - committed).",
    MEMBER_LABELS,
    partition_only=True,
)
GROUP_LAG_SECONDS = _d(
    "kafka_consumergroup_group_lag_seconds",
    "Time lag in seconds: age of the next record the group will read (0 when caught up).",
    MEMBER_LABELS + (COMPACTION, DATA_LOSS),
    partition_only=True,
)
GROUP_MESSAGES_LOST = _d(
    "kafka_consumergroup_group_messages_lost",
    "Messages removed by retention before the group read them: max(0, earliest - committed).",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
GROUP_RETENTION_MARGIN = _d(
    "kafka_consumergroup_group_retention_margin",
    "Committed offset minus earliest retained offset; negative means data loss.",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
GROUP_LAG_RETENTION_RATIO = _d(
    "kafka_consumergroup_group_lag_retention_ratio",
    "Lag as a percentage of the retained messages of the partition (100 means at the retention edge).",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
GROUP_OFFSET_OUT_OF_RANGE = _d(
    "kafka_consumergroup_group_offset_out_of_range",
    "Committed offset minus latest offset, only for partitions whose committed offset is past "
    "the log end: the consumer will reset; group_lag is 0 and no lag_seconds is reported "
    "(not counted as timestamp_unavailable).",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
GROUP_MAX_LAG = _d(
    "kafka_consumergroup_group_max_lag",
    "Largest partition offset lag of the consumer group.",
    (GROUP,),
)
GROUP_SUM_LAG = _d(
    "kafka_consumergroup_group_sum_lag",
    "Sum of the partition offset lags of the consumer group.",
    (GROUP,),
)
GROUP_MAX_LAG_SECONDS = _d(
    "kafka_consumergroup_group_max_lag_seconds",
    "Largest known partition time lag of the consumer group, in seconds.",
    (GROUP,),
)
GROUP_TOPIC_SUM_LAG = _d(
    "kafka_consumergroup_group_topic_sum_lag",
    "Sum of the partition offset lags of the consumer group on the topic.",
    (GROUP, TOPIC),
)
GROUP_STATE = _d(
    "kafka_consumergroup_group_state",
    "Consumer group state: "
    + ", ".join(f"{number} {name}" for name, number in GROUP_STATES.items())
    + ".",
    (GROUP,),
)
GROUP_MEMBERS = _d(
    "kafka_consumergroup_group_members",
    "Number of members of the consumer group.",
    (GROUP,),
)
SHARE_GROUP_START_OFFSET = _d(
    "kafka_sharegroup_group_start_offset",
    "Share-partition start offset of the share group (KIP-932): the first record not yet "
    "acknowledged or archived.",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
SHARE_GROUP_LAG = _d(
    "kafka_sharegroup_group_lag",
    "Offset lag of the share group on the partition: the lag DescribeShareGroupOffsets "
    "reports (v1+), else max(0, latest - start offset).",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
SHARE_GROUP_LAG_SECONDS = _d(
    "kafka_sharegroup_group_lag_seconds",
    "Time lag of the share group in seconds: age of the record at the start offset "
    "(0 when lag is 0).",
    GROUP_PARTITION_LABELS,
    partition_only=True,
)
SHARE_GROUP_SUM_LAG = _d(
    "kafka_sharegroup_group_sum_lag",
    "Sum of the partition offset lags of the share group.",
    (GROUP,),
)
SHARE_GROUP_MAX_LAG_SECONDS = _d(
    "kafka_sharegroup_group_max_lag_seconds",
    "Largest known partition time lag of the share group, in seconds.",
    (GROUP,),
)
SHARE_GROUP_STATE = _d(
    "kafka_sharegroup_group_state",
    "Share group state: "
    + ", ".join(f"{number} {name}" for name, number in SHARE_GROUP_STATES.items())
    + ".",
    (GROUP,),
)
SHARE_GROUP_MEMBERS = _d(
    "kafka_sharegroup_group_members",
    "Number of members of the share group.",
    (GROUP,),
)
POLL_TIME_MS = _d(
    "kafka_consumergroup_poll_time_ms",
    "Duration of the cluster's last collection cycle, in milliseconds.",
)
UP = _d(
    "kafka_lag_exporter_up",
    "1 when the cluster's last collection cycle succeeded and its data is not stale, else 0.",
)
SCRAPE_DURATION = _d(
    "kafka_lag_exporter_scrape_duration_seconds",
    "Duration of the cluster's last collection cycle, in seconds.",
)
LAST_UPDATE = _d(
    "kafka_lag_exporter_last_update_timestamp_seconds",
    "Unix time of the cluster's last successful collection cycle.",
)
COMPACTION_PARTITIONS = _d(
    "kafka_lag_exporter_compaction_detected_partitions",
    "Group partitions on topics whose cleanup.policy includes compact.",
)
DATA_LOSS_PARTITIONS = _d(
    "kafka_lag_exporter_data_loss_partitions",
    "Group partitions whose committed offset is below the earliest retained offset.",
)
OFFSET_OUT_OF_RANGE_PARTITIONS = _d(
    "kafka_lag_exporter_offset_out_of_range_partitions",
    "Group partitions whose committed offset is past the latest offset (log end).",
)
SKIPPED_PARTITIONS = _d(
    "kafka_lag_exporter_skipped_partitions",
    "Partitions left out of the last cycle because a value could not be read.",
    (REASON,),
)
SKIPPED_GROUPS = _d(
    "kafka_lag_exporter_skipped_groups",
    "Consumer groups left out of the last cycle because their offsets could not be read.",
    (REASON,),
)
CYCLE_FAILURES = _d(
    "kafka_lag_exporter_cycle_failures_total",
    "Collection cycles of the cluster that failed since the exporter started.",
    type="counter",
)
SKIPPED_TICKS = _d(
    "kafka_lag_exporter_skipped_ticks_total",
    "Poll ticks skipped because the previous cycle of the cluster was still running.",
    type="counter",
)
TIMESTAMP_CACHE_ENTRIES = _d(
    "kafka_lag_exporter_timestamp_cache_entries",
    "Record timestamps (and known misses) held in the cluster's timestamp cache.",
)
TIMESTAMP_CACHE_HITS = _d(
    "kafka_lag_exporter_timestamp_cache_hits_total",
    "Timestamp look-ups answered from the cache.",
    type="counter",
)
TIMESTAMP_CACHE_MISSES = _d(
    "kafka_lag_exporter_timestamp_cache_misses_total",
    "Timestamp look-ups that needed a fetch from Kafka.",
    type="counter",
)
TIMESTAMP_FETCH_ERRORS = _d(
    "kafka_lag_exporter_timestamp_fetch_errors_total",
    "Batched timestamp fetches that failed.",
    type="counter",
)
SHARDS_OWNED = _d(
    "kafka_lag_exporter_shards_owned",
    "Shards of the cluster's groups this replica reports now ([exporter.sharding]); "
    "sum() across replicas is the shard count.",
)
REBALANCES = _d(
    "kafka_lag_exporter_rebalances_total",
    "Rebalances of the coordination group this replica took part in since it started.",
    type="counter",
)

# Lag families, in exposition order.
LAG_FAMILIES = (
    PARTITION_LATEST_OFFSET,
    PARTITION_EARLIEST_OFFSET,
    GROUP_OFFSET,
    GROUP_LAG,
    GROUP_LAG_SECONDS,
    GROUP_MESSAGES_LOST,
    GROUP_RETENTION_MARGIN,
    GROUP_LAG_RETENTION_RATIO,
    GROUP_OFFSET_OUT_OF_RANGE,
    GROUP_MAX_LAG,
    GROUP_SUM_LAG,
    GROUP_MAX_LAG_SECONDS,
    GROUP_TOPIC_SUM_LAG,
    GROUP_STATE,
    GROUP_MEMBERS,
    SHARE_GROUP_START_OFFSET,
    SHARE_GROUP_LAG,
    SHARE_GROUP_LAG_SECONDS,
    SHARE_GROUP_SUM_LAG,
    SHARE_GROUP_MAX_LAG_SECONDS,
    SHARE_GROUP_STATE,
    SHARE_GROUP_MEMBERS,
    COMPACTION_PARTITIONS,
    DATA_LOSS_PARTITIONS,
    OFFSET_OUT_OF_RANGE_PARTITIONS,
    SKIPPED_PARTITIONS,
    SKIPPED_GROUPS,
)

# The exporter's own families, reported for every cluster even when its data is stale.
HEALTH_FAMILIES = (
    UP,
    POLL_TIME_MS,
    SCRAPE_DURATION,
    LAST_UPDATE,
    CYCLE_FAILURES,
    SKIPPED_TICKS,
    TIMESTAMP_CACHE_ENTRIES,
    TIMESTAMP_CACHE_HITS,
    TIMESTAMP_CACHE_MISSES,
    TIMESTAMP_FETCH_ERRORS,
)

# A sharded replica's own families ([exporter.sharding]), reported like the health families.
SHARDING_FAMILIES = (SHARDS_OWNED, REBALANCES)

ALL_FAMILIES = LAG_FAMILIES + HEALTH_FAMILIES + SHARDING_FAMILIES

# Every label name the exporter itself sets; custom cluster labels may not reuse them.
BUILTIN_LABELS = frozenset({CLUSTER}.union(*(d.labels for d in ALL_FAMILIES)))


def families_for(granularity: Granularity) -> Tuple[MetricDef, ...]:
    """The families a cluster of this granularity reports."""
    if granularity is Granularity.PARTITION:
        return ALL_FAMILIES
    return tuple(d for d in ALL_FAMILIES if not d.partition_only)
