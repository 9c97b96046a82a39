"""ConsumerGroupDescribe (API key 69) as klag_collector.kafka_protocol declares it: bytes written
out from Apache Kafka's JSON schema by hand, compared with what the classes encode and decode."""

from __future__ import annotations

import struct
import uuid

import pytest

from klag_collector.group_answers import consumer_group_info
from klag_collector.kafka_protocol import (
    CONSUMER_GROUP_DESCRIBE_KEY,
    ConsumerGroupDescribeRequest,
    ConsumerGroupDescribeResponse,
    supports,
)
from klag_collector.model import GroupInfo, Member

pytestmark = pytest.mark.unit


def compact_string(text: str) -> bytes:
    """A flexible version's string: unsigned varint of length + 1 (all here are < 127), UTF-8."""
    return bytes([len(text) + 1]) + text.encode()


NULL = b"\x00"  # a null compact nullable string
NO_TAGS = b"\x00"  # an empty tagged-field section


@pytest.mark.parametrize("version", [0, 1])
def test_the_request_encodes_as_the_schema_says(version: int) -> None:
    request = ConsumerGroupDescribeRequest(group_ids=["g1", "grp"],
                                           include_authorized_operations=False)
    expected = (
        b"\x03" + compact_string("g1") + compact_string("grp")  # []string: count + 1
        + b"\x00"  # IncludeAuthorizedOperations: false
        + NO_TAGS
    )
    assert request.encode(version=version) == expected
    assert ConsumerGroupDescribeRequest.API_KEY == CONSUMER_GROUP_DESCRIBE_KEY == 69
    assert ConsumerGroupDescribeRequest.max_version == 1


TOPIC_ID = uuid.UUID("0123456789abcdef0123456789abcdef")


def response_bytes(member_type: bytes) -> bytes:
    assignment = (
        b"\x02" + TOPIC_ID.bytes + compact_string("orders")
        + b"\x03" + struct.pack(">ii", 0, 2) + NO_TAGS  # Partitions [0, 2]; entry's tags
        + NO_TAGS  # Assignment's tags
    )
    member = (
        compact_string("m-1") + NULL + NULL  # MemberId, InstanceId, RackId
        + struct.pack(">i", 7)  # MemberEpoch
        + compact_string("client-a") + compact_string("/127.0.0.1")
        + b"\x02" + compact_string("orders") + NULL  # SubscribedTopicNames, SubscribedTopicRegex
        + assignment
        + b"\x01" + NO_TAGS  # TargetAssignment: no topics
        + member_type
        + NO_TAGS
    )
    group = (
        struct.pack(">h", 0) + NULL + compact_string("g") + compact_string("Reconciling")
        + struct.pack(">ii", 7, 6) + compact_string("uniform")
        + b"\x02" + member
        + struct.pack(">i", -2147483648)  # AuthorizedOperations
        + NO_TAGS
    )
    failed = (
        struct.pack(">h", 69) + compact_string("Group h is not a consumer group.")
        + compact_string("h") + compact_string("") + struct.pack(">ii", 0, 0)
        + compact_string("") + b"\x01" + struct.pack(">i", -2147483648) + NO_TAGS
    )
    return struct.pack(">i", 0) + b"\x03" + group + failed + NO_TAGS


@pytest.mark.parametrize("version,member_type", [(0, b""), (1, b"\x01")])
def test_a_hand_built_response_decodes(version: int, member_type: bytes) -> None:
    response = ConsumerGroupDescribeResponse.decode(response_bytes(member_type), version=version)
    ok, bad = response.groups
    assert (ok.error_code, ok.group_id, ok.group_state, ok.group_epoch) == (0, "g", "Reconciling", 7)
    member = ok.members[0]
    assert (member.member_id, member.instance_id, member.client_id) == ("m-1", None, "client-a")
    assert member.assignment.topic_partitions[0].topic_id == TOPIC_ID
    assert member.target_assignment.topic_partitions == []
    if version:
        assert member.member_type == 1
    assert (bad.error_code, bad.error_message) == (69, "Group h is not a consumer group.")
    # And as a GroupInfo: the member's current assignment gives the labels.
    member_labels = Member("m-1", "client-a", "127.0.0.1")
    assert consumer_group_info(ok) == GroupInfo(
        "g", "Reconciling", 1, {("orders", 0): member_labels, ("orders", 2): member_labels},
        group_type="consumer")


def test_the_request_is_sent_only_where_api_versions_lists_it() -> None:
    assert supports({69: (0, 1), 16: (0, 5)}, 69)
    assert not supports({16: (0, 5)}, 69)
    assert not supports(None, 69)


# -- ShareGroupDescribe (API key 77) and DescribeShareGroupOffsets (API key 90) ---------------

from klag_collector.group_answers import share_group_info, share_group_offsets  # noqa: E402
from klag_collector.kafka_protocol import (  # noqa: E402
    DESCRIBE_SHARE_GROUP_OFFSETS_KEY,
    SHARE_GROUP_DESCRIBE_KEY,
    DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse,
    ShareGroupDescribeRequest,
    ShareGroupDescribeResponse,
)
from klag_collector.model import ShareGroupInfo, ShareOffset  # noqa: E402


def test_share_group_describe_request_is_version_1_only() -> None:
    request = ShareGroupDescribeRequest(group_ids=["s"], include_authorized_operations=False)
    assert request.encode(version=1) == b"\x02" + compact_string("s") + b"\x00" + NO_TAGS
    assert ShareGroupDescribeRequest.API_KEY == SHARE_GROUP_DESCRIBE_KEY == 77
    assert ShareGroupDescribeRequest.valid_versions == (1, 1)  # v0 was 4.0's early access


def test_a_hand_built_share_group_describe_response_decodes() -> None:
    member = (
        compact_string("m-1") + NULL + struct.pack(">i", 3)  # MemberId, RackId, MemberEpoch
        + compact_string("client-s") + compact_string("/127.0.0.1")
        + b"\x02" + compact_string("orders")  # SubscribedTopicNames
        + b"\x02" + TOPIC_ID.bytes + compact_string("orders")  # Assignment: one topic
        + b"\x02" + struct.pack(">i", 0) + NO_TAGS + NO_TAGS
        + NO_TAGS
    )
    group = (
        struct.pack(">h", 0) + NULL + compact_string("s") + compact_string("Stable")
        + struct.pack(">ii", 4, 4) + compact_string("simple")
        + b"\x02" + member + struct.pack(">i", -2147483648) + NO_TAGS
    )
    raw = struct.pack(">i", 0) + b"\x02" + group + NO_TAGS
    response = ShareGroupDescribeResponse.decode(raw, version=1)
    (described,) = response.groups
    assert described.members[0].assignment.topic_partitions[0].partitions == [0]
    assert share_group_info(described) == ShareGroupInfo("s", "Stable", 1)


@pytest.mark.parametrize("version", [0, 1])
def test_describe_share_group_offsets_request_asks_for_every_topic(version: int) -> None:
    group = DescribeShareGroupOffsetsRequest.DescribeShareGroupOffsetsRequestGroup
    request = DescribeShareGroupOffsetsRequest(groups=[group(group_id="s", topics=None)])
    # Groups: 1 entry; GroupId; Topics null (compact nullable array: 0); tags; tags.
    assert request.encode(version=version) == b"\x02" + compact_string("s") + b"\x00" + NO_TAGS + NO_TAGS
    assert DescribeShareGroupOffsetsRequest.API_KEY == DESCRIBE_SHARE_GROUP_OFFSETS_KEY == 90
    assert DescribeShareGroupOffsetsRequest.max_version == 1


def offsets_bytes(version: int) -> bytes:
    def partition(index: int, start: int, lag: int, error: int) -> bytes:
        return (struct.pack(">iqi", index, start, 0)
                + (struct.pack(">q", lag) if version >= 1 else b"")
                + struct.pack(">h", error) + NULL + NO_TAGS)

    topic = (compact_string("orders") + TOPIC_ID.bytes + b"\x04"
             + partition(0, 4, 6, 0) + partition(1, -1, -1, 0) + partition(2, 0, 0, 3)
             + NO_TAGS)
    group = compact_string("s") + b"\x02" + topic + struct.pack(">h", 0) + NULL + NO_TAGS
    return struct.pack(">i", 0) + b"\x02" + group + NO_TAGS


@pytest.mark.parametrize("version,lag", [(0, None), (1, 6)])
def test_a_hand_built_describe_share_group_offsets_response_decodes(
    version: int, lag: object
) -> None:
    response = DescribeShareGroupOffsetsResponse.decode(offsets_bytes(version), version=version)
    (group,) = response.groups
    # Partition 2 answered with an error is left out; -1 (no start offset yet) is passed on.
    assert share_group_offsets(group) == {
        ("orders", 0): ShareOffset(4, lag),  # type: ignore[arg-type]
        ("orders", 1): ShareOffset(-1, None),
    }


def test_share_requests_are_listed_separately_in_api_versions() -> None:
    assert supports({77: (1, 1), 90: (0, 1)}, SHARE_GROUP_DESCRIBE_KEY)
    assert not supports({69: (0, 1)}, DESCRIBE_SHARE_GROUP_OFFSETS_KEY)  # Kafka 3.9
