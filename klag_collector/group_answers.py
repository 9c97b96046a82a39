"""Plain data from the answers of the group-describe requests, one function per answer.

Pure: each takes what kafka-python decoded (a describe_groups() entry, or one group of a
ConsumerGroupDescribe, StreamsGroupDescribe, ShareGroupDescribe or DescribeShareGroupOffsets
response) and returns the model's records. The requests themselves are `kafka_io`'s.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from .model import TP, GroupInfo, GroupType, Member, ShareGroupInfo, ShareOffset


def _member(member_id: Optional[str], client_id: Optional[str], host: Optional[str]) -> Member:
    return Member(
        consumer_id=member_id or "",
        client_id=client_id or "",
        # The coordinator reports hosts as "/1.2.3.4"; the slash is noise in a label.
        host=(host or "").lstrip("/"),
    )


def group_info(name: str, raw: Mapping[str, Any]) -> GroupInfo:
    """A GroupInfo from one entry of kafka-python's describe_groups() result."""
    assignments: Dict[TP, Member] = {}
    members = raw.get("members") or []
    for m in members:
        member = _member(m.get("member_id"), m.get("client_id"), m.get("client_host"))
        assignment = m.get("member_assignment") or {}
        if not isinstance(assignment, Mapping):  # undecodable: the group uses another protocol
            continue
        for entry in assignment.get("assigned_partitions") or []:
            for partition in entry["partitions"]:
                assignments[(entry["topic"], partition)] = member
    return GroupInfo(
        name=name,
        state=raw.get("group_state") or "Unknown",
        members=len(members),
        assignments=assignments,
    )


def consumer_group_info(raw: Any) -> GroupInfo:
    """A GroupInfo from one group of a ConsumerGroupDescribe response (no error code).

    Each member's labels come from its current assignment, what it owns and reads now (the
    target assignment is what the coordinator wants it to own next). In a group migrating
    from the classic protocol, classic members are described here too, assignment included.
    """
    assignments: Dict[TP, Member] = {}
    for m in raw.members:
        member = _member(m.member_id, m.client_id, m.client_host)
        for entry in m.assignment.topic_partitions if m.assignment is not None else []:
            for partition in entry.partitions:
                assignments[(entry.topic_name, partition)] = member
    return GroupInfo(
        name=raw.group_id,
        state=raw.group_state or "Unknown",
        members=len(raw.members),
        assignments=assignments,
        group_type=GroupType.CONSUMER,
    )


def streams_group_info(raw: Any) -> GroupInfo:
    """A GroupInfo from one group of a StreamsGroupDescribe response (no error code).

    A member's active task (subtopology, p) reads partition p of each source topic of that
    subtopology (its repartition topics included), so those partitions carry its labels.
    Standby and warm-up tasks read changelogs, not the group's committed partitions.
    """
    sources: Dict[str, List[str]] = {}
    subtopologies = raw.topology.subtopologies if raw.topology is not None else None
    for sub in subtopologies or []:
        sources[sub.subtopology_id] = [*sub.source_topics,
                                       *(t.name for t in sub.repartition_source_topics)]
    assignments: Dict[TP, Member] = {}
    for m in raw.members:
        member = _member(m.member_id, m.client_id, m.client_host)
        for task in m.assignment.active_tasks if m.assignment is not None else []:
            for topic in sources.get(task.subtopology_id, ()):
                for partition in task.partitions:
                    assignments[(topic, partition)] = member
    return GroupInfo(
        name=raw.group_id,
        state=raw.group_state or "Unknown",
        members=len(raw.members),
        assignments=assignments,
        group_type=GroupType.STREAMS,
    )


def share_group_info(raw: Any) -> ShareGroupInfo:
    """A ShareGroupInfo from one group of a ShareGroupDescribe response (no error code)."""
    return ShareGroupInfo(name=raw.group_id, state=raw.group_state or "Unknown",
                          members=len(raw.members))


def share_group_offsets(raw: Any) -> Dict[TP, ShareOffset]:
    """partition -> start offset (and broker lag) from one group of a DescribeShareGroupOffsets
    response; partitions answered with an error are left out, -1 offsets passed on."""
    found: Dict[TP, ShareOffset] = {}
    for topic in raw.topics:
        for p in topic.partitions:
            if p.error_code:
                continue
            lag = getattr(p, "lag", -1)  # absent before version 1
            found[(topic.topic_name, p.partition_index)] = ShareOffset(
                start_offset=p.start_offset, lag=lag if lag is not None and lag >= 0 else None
            )
    return found
