"""The wire rules of the Kafka I/O, on a recording stand-in for kafka-python's admin client.

These check how requests are batched and how answers are turned into plain data; that
the requests work against Kafka is shown on a real broker (test_integration and others).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import AbstractSet, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest
from kafka import TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import GroupAuthorizationFailedError
from kafka.structs import OffsetAndMetadata

from klag_collector.group_answers import group_info
from klag_collector.kafka_io import (
    DESCRIBE_BATCH,
    NO_CONSUMER_GROUP_DESCRIBE,
    AdminReads,
    not_offered,
)
from klag_collector.kafka_protocol import (
    ConsumerGroupDescribeResponse,
    StreamsGroupDescribeRequest,
    StreamsGroupDescribeResponse,
)
from klag_collector.model import GroupInfo, GroupType, ListedGroup, Member, TopicDescription


class RecordingAdmin:
    """Answers like KafkaAdminClient from canned data and records every request."""

    def __init__(
        self,
        groups: Optional[Dict[str, Dict[str, Any]]] = None,
        offsets: Optional[Dict[str, Dict[TopicPartition, int]]] = None,
        broken_offsets: AbstractSet[str] = frozenset(),
        configs: Optional[Dict[str, Dict[str, Any]]] = None,
    ) -> None:
        self.groups = groups or {}
        self.offsets = offsets or {}
        self.broken_offsets = broken_offsets
        self.configs = configs or {}
        self.calls: List[Tuple[Any, ...]] = []

    def describe_groups(self, names: List[str]) -> Dict[str, Dict[str, Any]]:
        self.calls.append(("describe_groups", list(names)))
        return {n: self.groups.get(n, {"error": None}) for n in names}

    def list_group_offsets(self, names: List[str]) -> Dict[str, Dict[TopicPartition, Any]]:
        self.calls.append(("list_group_offsets", list(names)))
        if self.broken_offsets & set(names):
            # kafka-python raises for the whole request when one group's answer has an error.
            raise GroupAuthorizationFailedError("OffsetFetchResponse failed")
        return {
            n: {tp: OffsetAndMetadata(o, "", -1) for tp, o in self.offsets.get(n, {}).items()}
            for n in names
        }

    def describe_configs(self, resources: Sequence[Any], config_filter: str) -> Any:
        self.calls.append(("describe_configs", [r.name for r in resources], config_filter))
        return {"topic": self.configs}


def reads(admin: RecordingAdmin) -> AdminReads:
    return AdminReads(admin, offset_fetch_timeout=2.5)


def test_groups_are_described_in_batches() -> None:
    names = [f"g{i:04}" for i in range(2 * DESCRIBE_BATCH + 1)]
    admin = RecordingAdmin()
    described = reads(admin).describe_groups([ListedGroup(n) for n in names])
    assert [len(call[1]) for call in admin.calls] == [DESCRIBE_BATCH, DESCRIBE_BATCH, 1]
    assert list(described.described) == names
    assert described.failed == ()


def test_a_group_described_with_an_error_is_returned_as_failed() -> None:
    admin = RecordingAdmin(groups={"bad": {"error": "CoordinatorNotAvailableError"}})
    described = reads(admin).describe_groups([ListedGroup("bad"), ListedGroup("good")])
    assert described.failed == ("bad",)
    assert described.reasons == {"bad": "CoordinatorNotAvailableError"}
    assert list(described.described) == ["good"]


def test_offsets_are_returned_as_kafka_said_them() -> None:
    """-1 (nothing committed) and every topic are passed on: leaving them out is policy."""
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("__x", 1)
    admin = RecordingAdmin(offsets={"g": {tp0: -1, tp1: 4}})
    offsets = reads(admin).committed_offsets(["g"])
    assert offsets.by_group == {"g": {("t", 0): -1, ("__x", 1): 4}}
    assert offsets.unavailable == ()
    assert admin.calls == [("list_group_offsets", ["g"])]


def test_one_broken_group_is_asked_alone_and_the_others_are_still_answered() -> None:
    tp = TopicPartition("t", 0)
    admin = RecordingAdmin(offsets={"a": {tp: 1}, "c": {tp: 3}}, broken_offsets={"b"})
    offsets = reads(admin).committed_offsets(["a", "b", "c"])
    assert admin.calls == [
        ("list_group_offsets", ["a", "b", "c"]),
        ("list_group_offsets", ["a"]),
        ("list_group_offsets", ["b"]),
        ("list_group_offsets", ["c"]),
    ]
    assert offsets.by_group == {"a": {("t", 0): 1}, "c": {("t", 0): 3}}
    assert offsets.unavailable == ("b",)


def test_nothing_is_asked_for_no_groups_partitions_or_topics() -> None:
    admin = RecordingAdmin()
    r = reads(admin)
    assert r.committed_offsets([]).by_group == {}
    assert r.watermarks({("t", 0): -1}) == ({}, {})
    assert r.cleanup_policies([]) == {}
    assert admin.calls == []


class ListOffsetsLeaders:
    """kafka-python's connection manager as AdminReads.watermarks uses it: each leader
    answers ListOffsets from its own log ends (partition 9 with an error)."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin

    def run(self, coro: Any, *args: Any) -> Any:
        import asyncio
        return asyncio.run(coro(*args))

    def send(self, request: Any, node_id: int, request_timeout_ms: int) -> Any:
        import asyncio
        from kafka.protocol.consumer import ListOffsetsResponse
        topic = ListOffsetsResponse.ListOffsetsTopicResponse
        partition = topic.ListOffsetsPartitionResponse
        self.admin.calls.append(("ListOffsets", node_id, request_timeout_ms, sorted(
            (t.name, p.partition_index, p.timestamp) for t in request.topics for p in t.partitions)))
        answer = ListOffsetsResponse(throttle_time_ms=0, topics=[topic(name=t.name, partitions=[
            partition(partition_index=p.partition_index, error_code=6 if p.partition_index == 9 else 0,
                      timestamp=-1, offset=(100 * node_id + (0 if p.timestamp == -2 else 50)))
            for p in t.partitions]) for t in request.topics])
        done: Any = asyncio.get_event_loop().create_future()
        done.set_result(answer)
        return done


def test_watermarks_are_asked_of_each_leader_both_kinds_at_once() -> None:
    """One ListOffsets per kind (-2 earliest, -1 latest) per leader, with the offset fetch
    timeout; a leaderless or errored partition is left out, not 0."""
    admin = RecordingAdmin()
    admin._manager = ListOffsetsLeaders(admin)  # type: ignore[attr-defined]
    marks = reads(admin).watermarks({("t", 0): 1, ("t", 1): 2, ("t", 2): -1, ("t", 9): 1})
    assert marks.earliest == {("t", 0): 100, ("t", 1): 200}
    assert marks.latest == {("t", 0): 150, ("t", 1): 250}
    assert admin.calls == [
        ("ListOffsets", 1, 2500, [("t", 0, -2), ("t", 9, -2)]),
        ("ListOffsets", 1, 2500, [("t", 0, -1), ("t", 9, -1)]),
        ("ListOffsets", 2, 2500, [("t", 1, -2)]),
        ("ListOffsets", 2, 2500, [("t", 1, -1)]),
    ]


def test_a_topic_the_broker_gave_no_cleanup_policy_for_answers_empty() -> None:
    admin = RecordingAdmin(configs={
        "c": {"cleanup.policy": {"value": "compact,delete"}},
        "n": {"cleanup.policy": {"value": None}},
    })
    policies = reads(admin).cleanup_policies(["c", "n", "missing"])
    assert policies == {"c": "compact,delete", "n": "", "missing": ""}
    assert admin.calls == [("describe_configs", ["c", "n", "missing"], "all")]


def test_topics_are_returned_with_errors_and_leaderless_partitions() -> None:
    admin = SimpleNamespace(describe_topics=lambda: [
        {"name": "t", "error_code": 0,
         "partitions": [{"partition_index": 0, "leader_id": 1},
                        {"partition_index": 1, "leader_id": -1}]},
        {"name": "broken", "error_code": 3, "partitions": []},
        {"name": "quiet", "partitions": []},
    ])
    assert AdminReads(admin, 1.0).describe_topics() == (
        TopicDescription("t", 0, {0: 1, 1: -1}),
        TopicDescription("broken", 3, {}),
        TopicDescription("quiet", 0, {}),
    )


def test_group_info_maps_partitions_to_members_and_skips_other_protocols() -> None:
    raw = {
        "group_state": "Stable",
        "members": [
            {"member_id": "m1", "client_id": "c1", "client_host": "/10.0.0.1",
             "member_assignment": {"assigned_partitions": [{"topic": "t", "partitions": [0, 2]}]}},
            {"member_id": "m2", "client_id": "c2", "client_host": "/10.0.0.2",
             "member_assignment": b"\x00undecodable"},
        ],
    }
    info = group_info("g", raw)
    m1 = Member(consumer_id="m1", client_id="c1", host="10.0.0.1")
    assert (info.name, info.state, info.members) == ("g", "Stable", 2)
    assert info.assignments == {("t", 0): m1, ("t", 2): m1}


@pytest.mark.parametrize("raw", [{}, {"group_state": "", "members": None}])
def test_group_info_of_an_empty_answer_is_unknown_with_no_members(raw: Dict[str, Any]) -> None:
    info = group_info("g", raw)
    assert (info.state, info.members, dict(info.assignments)) == ("Unknown", 0, {})


# --- consumer groups (KIP-848): ConsumerGroupDescribe -----------------------------------------

_Group = ConsumerGroupDescribeResponse.DescribedGroup
_Member = _Group.Member


def described_group(name: str, state: str = "Stable", error: int = 0) -> Any:
    member = _Member(member_id=f"{name}-m", client_id="c", client_host="/10.0.0.1",
                     assignment=_Member.Assignment(topic_partitions=[
                         _Member.Assignment.TopicPartitions(topic_name="t", partitions=[0])]),
                     target_assignment=_Member.Assignment(topic_partitions=[]))
    return _Group(error_code=error, error_message=None, group_id=name, group_state=state,
                  members=[] if error else [member])


class FakeManager:
    """kafka-python's connection manager as AdminReads uses it: api versions, run, send."""

    def __init__(self, admin: "ConsumerAdmin", api_versions: Optional[Dict[int, Any]]) -> None:
        self.admin = admin
        self.broker_version_data = SimpleNamespace(api_versions=api_versions)

    def run(self, coro: Any, *args: Any) -> Any:
        import asyncio
        return asyncio.run(coro(*args))

    async def send(self, request: Any, node_id: int) -> Any:
        streams = isinstance(request, StreamsGroupDescribeRequest)
        name = "StreamsGroupDescribe" if streams else "ConsumerGroupDescribe"
        self.admin.calls.append((name, node_id, list(request.group_ids)))
        answers = [self.admin.answer(name, n) for n in request.group_ids]
        response = StreamsGroupDescribeResponse if streams else ConsumerGroupDescribeResponse
        return response(throttle_time_ms=0, groups=answers)


class ConsumerAdmin(RecordingAdmin):
    def __init__(self, api_versions: Optional[Dict[int, Any]] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.consumer_groups: Dict[str, Any] = {}
        self.streams_groups: Dict[str, Any] = {}
        # request name -> answers to give before the group's own (errors such as NOT_COORDINATOR)
        self.first_answers: Dict[str, List[Any]] = {}
        self._manager = FakeManager(self, api_versions)

    def answer(self, request: str, name: str) -> Any:
        if self.first_answers.get(name):
            return self.first_answers[name].pop(0)
        if request == "StreamsGroupDescribe":
            return self.streams_groups.get(name) or streams_group(name, "", error=69)
        return self.consumer_groups.get(name) or described_group(name, "", error=69)

    async def _find_coordinator_ids(self, names: List[str]) -> Dict[str, int]:
        return {n: 1 if n < "m" else 2 for n in names}


def test_consumer_groups_are_described_with_consumer_group_describe_per_coordinator() -> None:
    admin = ConsumerAdmin({69: (0, 1)})
    admin.consumer_groups = {"a": described_group("a"), "x": described_group("x", "Assigning")}
    result = reads(admin).describe_groups(
        [ListedGroup("a", GroupType.CONSUMER), ListedGroup("c"), ListedGroup("x", GroupType.CONSUMER)])
    assert admin.calls == [("describe_groups", ["c"]), ("ConsumerGroupDescribe", 1, ["a"]),
                           ("ConsumerGroupDescribe", 2, ["x"])]
    assert result.failed == ()
    assert result.described["x"] == GroupInfo(
        "x", "Assigning", 1, {("t", 0): Member("x-m", "c", "10.0.0.1")}, group_type=GroupType.CONSUMER)
    assert result.described["c"].group_type == "classic"
    assert result.types == {"a": "consumer", "c": "classic", "x": "consumer"}


def test_a_consumer_group_is_not_asked_about_where_the_broker_lacks_the_request() -> None:
    admin = ConsumerAdmin({16: (0, 5)})
    result = reads(admin).describe_groups([ListedGroup("a", GroupType.CONSUMER)])
    assert admin.calls == []
    assert result.failed == ("a",)
    assert result.reasons == {"a": NO_CONSUMER_GROUP_DESCRIBE}


def test_a_classic_group_that_migrated_since_it_was_listed_is_asked_again() -> None:
    """Listed as classic, now a consumer group: DescribeGroups says so, ConsumerGroupDescribe answers."""
    not_classic = "[Error 69] GroupIdNotFoundError: Group m is not a classic group."
    admin = ConsumerAdmin({69: (0, 1)}, groups={"m": {"error": not_classic}})
    admin.consumer_groups = {"m": described_group("m", "Reconciling")}
    result = reads(admin).describe_groups([ListedGroup("m")])
    assert admin.calls == [("describe_groups", ["m"]), ("ConsumerGroupDescribe", 2, ["m"])]
    assert result.failed == ()
    assert result.described["m"].state == "Reconciling"
    assert result.described["m"].members == 1


def test_a_consumer_group_describe_error_is_a_failure_with_its_reason() -> None:
    admin = ConsumerAdmin({69: (0, 1)})
    admin.consumer_groups = {"a": described_group("a", error=30)}
    result = reads(admin).describe_groups([ListedGroup("a", GroupType.CONSUMER)])
    assert result.failed == ("a",)
    assert result.reasons == {"a": "ConsumerGroupDescribe: GroupAuthorizationFailedError"}


def test_a_group_whose_coordinator_moved_is_asked_once_more() -> None:
    """NOT_COORDINATOR (16) and COORDINATOR_LOAD_IN_PROGRESS (14): the coordinator is looked
    up again and the group asked again, once; a third such answer is the group's failure."""
    admin = ConsumerAdmin({69: (0, 1)})
    admin.consumer_groups = {"a": described_group("a"), "b": described_group("b")}
    admin.first_answers = {"a": [described_group("a", error=16)],
                           "b": [described_group("b", error=14), described_group("b", error=16)]}
    result = reads(admin).describe_groups(
        [ListedGroup("a", GroupType.CONSUMER), ListedGroup("b", GroupType.CONSUMER)])
    assert admin.calls == [("ConsumerGroupDescribe", 1, ["a", "b"]),
                           ("ConsumerGroupDescribe", 1, ["a", "b"])]
    assert list(result.described) == ["a"]
    assert result.reasons == {"b": "ConsumerGroupDescribe: NotCoordinatorError"}


# --- streams groups (KIP-1071): StreamsGroupDescribe ------------------------------------------

_SGroup = StreamsGroupDescribeResponse.DescribedGroup
_SMember = _SGroup.Member
_Tasks = _SMember.Assignment


def streams_group(name: str, state: str = "Stable", error: int = 0) -> Any:
    """Subtopology "0" reads topic t and repartition topic r; "1" reads topic u. The one
    member runs tasks 0_0, 0_2 (active), 1_1 (standby only)."""
    sub = _SGroup.Topology.Subtopology
    topology = _SGroup.Topology(epoch=1, subtopologies=[
        sub(subtopology_id="0", source_topics=["t"], repartition_sink_topics=[],
            state_changelog_topics=[], repartition_source_topics=[
                sub.TopicInfo(name="r", partitions=3, replication_factor=1, topic_configs=[])]),
        sub(subtopology_id="1", source_topics=["u"], repartition_sink_topics=[],
            state_changelog_topics=[], repartition_source_topics=[]),
    ])
    member = _SMember(
        member_id=f"{name}-m", member_epoch=3, client_id="app-StreamThread-1-consumer",
        client_host="/10.0.0.9", topology_epoch=1, process_id="p", client_tags=[],
        task_offsets=[], task_end_offsets=[], is_classic=False,
        assignment=_Tasks(active_tasks=[_Tasks.TaskIds(subtopology_id="0", partitions=[0, 2])],
                          standby_tasks=[_Tasks.TaskIds(subtopology_id="1", partitions=[1])],
                          warmup_tasks=[]),
        target_assignment=_Tasks(active_tasks=[], standby_tasks=[], warmup_tasks=[]))
    return _SGroup(error_code=error, error_message=None, group_id=name, group_state=state,
                   group_epoch=3, assignment_epoch=3, topology=None if error else topology,
                   members=[] if error else [member])


def test_streams_groups_are_described_with_streams_group_describe() -> None:
    """A member's active tasks give it every source partition of their subtopology."""
    admin = ConsumerAdmin({89: (0, 1)})
    admin.streams_groups = {"s": streams_group("s", "NotReady")}
    result = reads(admin).describe_groups([ListedGroup("s", GroupType.STREAMS)])
    assert admin.calls == [("StreamsGroupDescribe", 2, ["s"])]
    member = Member("s-m", "app-StreamThread-1-consumer", "10.0.0.9")
    assert result.described == {"s": GroupInfo(
        "s", "NotReady", 1,
        {("t", 0): member, ("t", 2): member, ("r", 0): member, ("r", 2): member},
        group_type=GroupType.STREAMS)}
    assert result.failed == ()


def test_a_streams_group_where_the_broker_lacks_the_request_is_a_failure() -> None:
    admin = ConsumerAdmin({69: (0, 1)})
    result = reads(admin).describe_groups([ListedGroup("s", GroupType.STREAMS)])
    assert admin.calls == []
    assert result.reasons == {"s": not_offered(89)}
    assert result.reasons["s"] == "the broker does not offer StreamsGroupDescribe (API key 89)"


def test_a_streams_group_describe_error_is_a_failure_with_its_reason() -> None:
    admin = ConsumerAdmin({89: (0, 1)})
    admin.streams_groups = {"s": streams_group("s", error=30)}
    result = reads(admin).describe_groups([ListedGroup("s", GroupType.STREAMS)])
    assert result.reasons == {"s": "StreamsGroupDescribe: GroupAuthorizationFailedError"}
