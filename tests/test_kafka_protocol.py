"""ConsumerGroupDescribe (API key 69) as klag_collector.kafka_protocol declares it: bytes written
out from Apache Kafka's JSON schema by hand, compared with what the classes encode and decode."""

from __future__ import annotations

import struct
import uuid

import pytest

from klag_collector.kafka_io import consumer_group_info
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
