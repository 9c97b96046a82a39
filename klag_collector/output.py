"""What `--once` prints: a table for a person, JSON for scripts, or the exposition text."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

from .poller import ClusterPoller

TABLE_COLUMNS = (
    "CLUSTER",
    "GROUP",
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


def _seconds(value: Optional[float]) -> str:
    # "-" rather than 0: an unknown time lag must not read as "caught up".
    return "-" if value is None else f"{value:.1f}"


def as_dict(pollers: Sequence[ClusterPoller]) -> Dict[str, Any]:
    """Every cluster's result as plain data (what --format json prints)."""
    clusters: Dict[str, Any] = {}
    for p in pollers:
        entry: Dict[str, Any] = {"ok": p.snapshot is not None, "error": p.health.last_error}
        if p.snapshot is not None:
            view = p.snapshot.view
            entry["groups"] = {
                g.group: {
                    "state": g.state,
                    "members": g.members,
                    "sum_lag": g.sum_lag,
                    "max_lag": g.max_lag,
                    "max_lag_seconds": g.max_lag_seconds,
                    "partitions": [],
                }
                for g in view.groups
            }
            for r in view.partitions:
                entry["groups"][r.group]["partitions"].append(
                    {
                        "topic": r.topic,
                        "partition": r.partition,
                        "committed": r.committed,
                        "earliest": r.earliest,
                        "latest": r.latest,
                        "lag": r.lag,
                        "lag_seconds": r.lag_seconds,
                        "messages_lost": r.messages_lost,
                        "data_loss": r.data_loss,
                        "compacted": r.compacted,
                        "consumer_id": r.member.consumer_id,
                        "host": r.member.host,
                        "client_id": r.member.client_id,
                    }
                )
            entry["skipped"] = dict(view.skipped)
        clusters[p.name] = entry
    return {"clusters": clusters}


def as_json(pollers: Sequence[ClusterPoller]) -> str:
    """JSON text of as_dict()."""
    return json.dumps(as_dict(pollers), indent=2, sort_keys=True)


def as_table(pollers: Sequence[ClusterPoller]) -> str:
    """An aligned table in the manner of kafka-consumer-groups --describe, with time lag."""
    rows: List[Sequence[str]] = [TABLE_COLUMNS]
    errors: List[str] = []
    for p in pollers:
        if p.snapshot is None:
            errors.append(f"cluster {p.name}: not collected: {p.health.last_error}")
            continue
        view = p.snapshot.view
        state = {g.group: g.state for g in view.groups}
        for r in view.partitions:
            rows.append(
                (
                    p.name,
                    r.group,
                    state[r.group],
                    r.topic,
                    str(r.partition),
                    str(r.committed),
                    str(r.latest),
                    str(r.lag),
                    _seconds(r.lag_seconds),
                    r.member.consumer_id or "-",
                    r.member.host or "-",
                    r.member.client_id or "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + errors)
