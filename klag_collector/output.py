"""What `--once` prints: a table for a person, JSON for scripts, or the exposition text."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Protocol, Sequence

from .logs import printable
from .model import ClusterHealth, GroupType, LagView, PartitionLag, SharePartitionLag
from .poller import ClusterSnapshot
from .render import Rendered, Variant

TABLE_COLUMNS = (
    "CLUSTER",
    "GROUP",
    "TYPE",
    "STATE",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "LAG-SECONDS",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
)


class ClusterResult(Protocol):
    """A cluster's outcome: a collector.ClusterReport, or a poller itself."""

    @property
    def name(self) -> str: ...

    @property
    def health(self) -> ClusterHealth: ...

    @property
    def snapshot(self) -> Optional[ClusterSnapshot]: ...


def _seconds(value: Optional[float]) -> str:
    # "-" rather than 0: an unknown time lag must not read as "caught up".
    return "-" if value is None else f"{value:.1f}"


def _partition_entry(row: PartitionLag) -> Dict[str, Any]:
    return {
        "topic": row.topic,
        "partition": row.partition,
        "committed": row.committed,
        "earliest": row.earliest,
        "latest": row.latest,
        "lag": row.lag,
        "lag_seconds": row.lag_seconds,
        "messages_lost": row.messages_lost,
        "data_loss": row.data_loss,
        "compacted": row.compacted,
        "consumer_id": row.member.consumer_id,
        "host": row.member.host,
        "client_id": row.member.client_id,
    }


def _groups_entry(view: LagView) -> Dict[str, Any]:
    groups: Dict[str, Any] = {
        group.group: {
            "type": str(group.group_type),
            "state": group.state,
            "members": group.members,
            "sum_lag": group.sum_lag,
            "max_lag": group.max_lag,
            "max_lag_seconds": group.max_lag_seconds,
            "partitions": [],
        }
        for group in view.groups
    }
    for row in view.partitions:
        groups[row.group]["partitions"].append(_partition_entry(row))
    for share in view.share_groups:
        groups[share.group] = {
            "type": str(GroupType.SHARE),
            "state": share.state,
            "members": share.members,
            "sum_lag": share.sum_lag,
            "max_lag_seconds": share.max_lag_seconds,
            "partitions": [],
        }
    for share_row in view.share_partitions:
        groups[share_row.group]["partitions"].append(_share_partition_entry(share_row, view))
    return groups


def _share_partition_entry(row: SharePartitionLag, view: LagView) -> Dict[str, Any]:
    return {
        "topic": row.topic,
        "partition": row.partition,
        "start_offset": row.start_offset,
        "latest": view.latest.get((row.topic, row.partition)),
        "lag": row.lag,
        "lag_seconds": row.lag_seconds,
    }


def as_dict(clusters: Sequence[ClusterResult]) -> Dict[str, Any]:
    """Every cluster's result as plain data (what --format json prints)."""
    entries: Dict[str, Any] = {}
    for cluster in clusters:
        entry: Dict[str, Any] = {
            "ok": cluster.snapshot is not None,
            "error": cluster.health.last_error,
        }
        if cluster.snapshot is not None:
            entry["groups"] = _groups_entry(cluster.snapshot.view)
            entry["skipped"] = dict(cluster.snapshot.view.skipped)
            entry["skipped_groups"] = dict(cluster.snapshot.view.skipped_groups)
        entries[cluster.name] = entry
    return {"clusters": entries}


def as_json(clusters: Sequence[ClusterResult]) -> str:
    """JSON text of as_dict(), in ASCII: names and errors from Kafka come out with their control
    characters escaped (\\u001b), never raw on a terminal."""
    return json.dumps(as_dict(clusters), indent=2, sort_keys=True, ensure_ascii=True)


def _table_rows(name: str, view: LagView) -> List[Sequence[str]]:
    groups = {group.group: group for group in view.groups}
    return [
        (
            name,
            row.group,
            str(groups[row.group].group_type),
            groups[row.group].state,
            row.topic,
            str(row.partition),
            str(row.committed),
            str(row.latest),
            str(row.lag),
            _seconds(row.lag_seconds),
            row.member.consumer_id or "-",
            row.member.host or "-",
            row.member.client_id or "-",
        )
        for row in view.partitions
    ] + _share_table_rows(name, view)


def _share_table_rows(name: str, view: LagView) -> List[Sequence[str]]:
    # A share group has no committed offset: CURRENT-OFFSET is its share-partition start offset.
    state = {group.group: group.state for group in view.share_groups}
    return [
        (
            name,
            row.group,
            str(GroupType.SHARE),
            state[row.group],
            row.topic,
            str(row.partition),
            str(row.start_offset),
            str(view.latest.get((row.topic, row.partition), "-")),
            str(row.lag),
            _seconds(row.lag_seconds),
            "-",
            "-",
            "-",
        )
        for row in view.share_partitions
    ]


def _skipped_groups_line(name: str, view: LagView) -> List[str]:
    """One line naming the groups left out of a cluster, by reason; none when none were."""
    if not view.skipped_groups:
        return []
    counts = ", ".join(f"{count} {reason}" for reason, count in sorted(view.skipped_groups.items()))
    return [f"cluster {name}: groups skipped: {counts}"]


def as_table(clusters: Sequence[ClusterResult]) -> str:
    """An aligned table in the manner of kafka-consumer-groups --describe, with time lag."""
    rows: List[Sequence[str]] = [TABLE_COLUMNS]
    notes: List[str] = []
    for cluster in clusters:
        if cluster.snapshot is None:
            notes.append(f"cluster {cluster.name}: not collected: {cluster.health.last_error}")
        else:
            rows.extend(_table_rows(cluster.name, cluster.snapshot.view))
            notes.extend(_skipped_groups_line(cluster.name, cluster.snapshot.view))
    # Names and errors come from Kafka: escaped, a group named "x\\x1b[2J" cannot clear the screen.
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(TABLE_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells
    ]
    return "\n".join(lines + [printable(note) for note in notes])


def as_prometheus(rendered: Optional[Rendered]) -> str:
    """The text exposition of a render: what /metrics serves; nothing if rendering failed."""
    return "" if rendered is None else rendered.body(Variant(openmetrics=False, gzipped=False)).decode()
