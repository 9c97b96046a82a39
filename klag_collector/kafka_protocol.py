"""Kafka protocol messages kafka-python lacks, declared the way kafka-python declares its own.

kafka-python 3 builds each message class from Apache Kafka's JSON schema, read from a file
shipped in its package. Ours are written here as Python data, copied from
clients/src/main/resources/common/message/*.json of Apache Kafka (4.4: versions 0-1),
and fed to the same machinery, so encoding, decoding, version negotiation (from the broker's
ApiVersions) and the response registry are kafka-python's.

- ConsumerGroupDescribe (API key 69, KIP-848): describes groups of type `consumer`, which
  DescribeGroups answers with "not a classic group".
- ShareGroupDescribe (API key 77, KIP-932; version 1 only, version 0 was Kafka 4.0's early
  access): the state and members of groups of type `share`.
- DescribeShareGroupOffsets (API key 90, KIP-932; versions 0-1, 1 adds Lag, KIP-1226): each
  share-partition's start offset, and from version 1 the lag the broker computes.
- StreamsGroupDescribe (API key 89, KIP-1071; version 0, which every broker that has it
  accepts): the state, topology and members (with their active tasks) of groups of type
  `streams`.

A request is only sent to a broker whose ApiVersions lists its API key: see `supports()`.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from kafka.protocol.api_message import ApiMessage
from kafka.protocol.data_container import SlotsBuilder
from kafka.protocol.schemas import StructField

CONSUMER_GROUP_DESCRIBE_KEY = 69
SHARE_GROUP_DESCRIBE_KEY = 77
DESCRIBE_SHARE_GROUP_OFFSETS_KEY = 90
STREAMS_GROUP_DESCRIBE_KEY = 89
# The requests' names, for the lines that say one is missing or failed.
API_NAMES = {
    CONSUMER_GROUP_DESCRIBE_KEY: "ConsumerGroupDescribe",
    SHARE_GROUP_DESCRIBE_KEY: "ShareGroupDescribe",
    DESCRIBE_SHARE_GROUP_OFFSETS_KEY: "DescribeShareGroupOffsets",
    STREAMS_GROUP_DESCRIBE_KEY: "StreamsGroupDescribe",
}

_ASSIGNMENT: List[Dict[str, Any]] = [
    {"name": "TopicPartitions", "type": "[]TopicPartitions", "versions": "0+",
     "about": "The assigned topic-partitions to the member.", "fields": [
        {"name": "TopicId", "type": "uuid", "versions": "0+", "about": "The topic ID."},
        {"name": "TopicName", "type": "string", "versions": "0+", "entityType": "topicName",
         "about": "The topic name."},
        {"name": "Partitions", "type": "[]int32", "versions": "0+", "about": "The partitions."},
    ]},
]

# Member fields the consumer and share group-describe responses share.
_MEMBER_ID: Dict[str, Any] = {"name": "MemberId", "type": "string", "versions": "0+",
                              "about": "The member ID."}
_CURRENT_ASSIGNMENT: Dict[str, Any] = {
    "name": "Assignment", "type": "Assignment", "versions": "0+",
    "about": "The current assignment.", "fields": _ASSIGNMENT}

# Fields the two group-describe responses share, in their order there.
_GROUP_HEADER: List[Dict[str, Any]] = [
    {"name": "ErrorCode", "type": "int16", "versions": "0+",
     "about": "The describe error, or 0 if there was no error."},
    {"name": "ErrorMessage", "type": "string", "versions": "0+",
     "nullableVersions": "0+", "default": "null",
     "about": "The top-level error message, or null if there was no error."},
    {"name": "GroupId", "type": "string", "versions": "0+", "entityType": "groupId",
     "about": "The group ID string."},
    {"name": "GroupState", "type": "string", "versions": "0+",
     "about": "The group state string, or the empty string."},
    {"name": "GroupEpoch", "type": "int32", "versions": "0+",
     "about": "The group epoch."},
    {"name": "AssignmentEpoch", "type": "int32", "versions": "0+",
     "about": "The assignment epoch."},
    {"name": "AssignorName", "type": "string", "versions": "0+",
     "about": "The selected assignor."},
]
_MEMBER_COMMON: List[Dict[str, Any]] = [
    {"name": "RackId", "type": "string", "versions": "0+",
     "nullableVersions": "0+", "default": "null",
     "about": "The member rack ID."},
    {"name": "MemberEpoch", "type": "int32", "versions": "0+",
     "about": "The current member epoch."},
    {"name": "ClientId", "type": "string", "versions": "0+",
     "about": "The client ID."},
    {"name": "ClientHost", "type": "string", "versions": "0+",
     "about": "The client host."},
    {"name": "SubscribedTopicNames", "type": "[]string", "versions": "0+",
     "entityType": "topicName", "about": "The subscribed topic names."},
]
_AUTHORIZED_OPERATIONS: Dict[str, Any] = {
    "name": "AuthorizedOperations", "type": "int32", "versions": "0+", "default": "-2147483648",
    "about": "32-bit bitfield to represent authorized operations for this group."}

# StreamsGroupDescribe's common structs, inlined where they are used.
_KEY_VALUE: List[Dict[str, Any]] = [
    {"name": "Key", "type": "string", "versions": "0+", "about": "key of the config"},
    {"name": "Value", "type": "string", "versions": "0+", "about": "value of the config"},
]
_TOPIC_INFO: List[Dict[str, Any]] = [
    {"name": "Name", "type": "string", "versions": "0+", "about": "The name of the topic."},
    {"name": "Partitions", "type": "int32", "versions": "0+",
     "about": "The number of partitions in the topic."},
    {"name": "ReplicationFactor", "type": "int16", "versions": "0+",
     "about": "The replication factor of the topic."},
    {"name": "TopicConfigs", "type": "[]KeyValue", "versions": "0+",
     "about": "Topic-level configurations as key-value pairs.", "fields": _KEY_VALUE},
]
_TASK_OFFSET: List[Dict[str, Any]] = [
    {"name": "SubtopologyId", "type": "string", "versions": "0+",
     "about": "The subtopology identifier."},
    {"name": "Partition", "type": "int32", "versions": "0+", "about": "The partition."},
    {"name": "Offset", "type": "int64", "versions": "0+", "about": "The offset."},
]
_TASK_IDS: List[Dict[str, Any]] = [
    {"name": "SubtopologyId", "type": "string", "versions": "0+",
     "about": "The subtopology identifier."},
    {"name": "Partitions", "type": "[]int32", "versions": "0+",
     "about": "The partitions of the input topics processed by this member."},
]
_TASKS: List[Dict[str, Any]] = [
    {"name": name, "type": "[]TaskIds", "versions": "0+", "about": f"{name} of this client.",
     "fields": _TASK_IDS}
    for name in ("ActiveTasks", "StandbyTasks", "WarmupTasks")
]
_STREAMS_MEMBER: List[Dict[str, Any]] = [
    {"name": "MemberId", "type": "string", "versions": "0+", "about": "The member ID."},
    {"name": "MemberEpoch", "type": "int32", "versions": "0+", "about": "The member epoch."},
    {"name": "InstanceId", "type": "string", "versions": "0+", "nullableVersions": "0+",
     "default": "null", "about": "The member instance ID for static membership."},
    {"name": "RackId", "type": "string", "versions": "0+", "nullableVersions": "0+",
     "default": "null", "about": "The rack ID."},
    {"name": "ClientId", "type": "string", "versions": "0+", "about": "The client ID."},
    {"name": "ClientHost", "type": "string", "versions": "0+", "about": "The client host."},
    {"name": "TopologyEpoch", "type": "int32", "versions": "0+",
     "about": "The epoch of the topology on the client."},
    {"name": "ProcessId", "type": "string", "versions": "0+",
     "about": "Identity of the streams instance that may have multiple clients."},
    {"name": "UserEndpoint", "type": "Endpoint", "versions": "0+", "nullableVersions": "0+",
     "default": "null", "about": "User-defined endpoint for Interactive Queries.", "fields": [
        {"name": "Host", "type": "string", "versions": "0+", "about": "host of the endpoint"},
        {"name": "Port", "type": "uint16", "versions": "0+", "about": "port of the endpoint"},
    ]},
    {"name": "ClientTags", "type": "[]KeyValue", "versions": "0+",
     "about": "Used for rack-aware assignment algorithm.", "fields": _KEY_VALUE},
    {"name": "TaskOffsets", "type": "[]TaskOffset", "versions": "0+",
     "about": "Cumulative changelog offsets for tasks.", "fields": _TASK_OFFSET},
    {"name": "TaskEndOffsets", "type": "[]TaskOffset", "versions": "0+",
     "about": "Cumulative changelog end offsets for tasks.", "fields": _TASK_OFFSET},
    {"name": "Assignment", "type": "Assignment", "versions": "0+",
     "about": "The current assignment.", "fields": _TASKS},
    {"name": "TargetAssignment", "type": "Assignment", "versions": "0+",
     "about": "The target assignment.", "fields": _TASKS},
    {"name": "IsClassic", "type": "bool", "versions": "0+",
     "about": "True for classic members that have not been upgraded yet."},
]
_SUBTOPOLOGY: List[Dict[str, Any]] = [
    {"name": "SubtopologyId", "type": "string", "versions": "0+",
     "about": "String to uniquely identify the subtopology."},
    {"name": "SourceTopics", "type": "[]string", "versions": "0+",
     "about": "The topics the subtopology reads from."},
    {"name": "RepartitionSinkTopics", "type": "[]string", "versions": "0+",
     "about": "The repartition topics the subtopology writes to."},
    {"name": "StateChangelogTopics", "type": "[]TopicInfo", "versions": "0+",
     "about": "The state changelog topics of this subtopology.", "fields": _TOPIC_INFO},
    {"name": "RepartitionSourceTopics", "type": "[]TopicInfo", "versions": "0+",
     "about": "The internal repartition topics it reads from.", "fields": _TOPIC_INFO},
]

_THROTTLE_TIME: Dict[str, Any] = {"name": "ThrottleTimeMs", "type": "int32", "versions": "0+",
                                  "about": "The throttle time in ms."}


def _described_groups(group_fields: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The fields of a group-describe response: a throttle time and the described groups,
    each with *group_fields* and the authorized operations last."""
    return [
        _THROTTLE_TIME,
        {"name": "Groups", "type": "[]DescribedGroup", "versions": "0+",
         "about": "Each described group.", "fields": [*group_fields, _AUTHORIZED_OPERATIONS]},
    ]


# The fields of the group describe requests (consumer and streams: version 0; share: 1).
_DESCRIBE_REQUEST: List[Dict[str, Any]] = [
    {"name": "GroupIds", "type": "[]string", "versions": "0+", "entityType": "groupId",
     "about": "The ids of the groups to describe"},
    {"name": "IncludeAuthorizedOperations", "type": "bool", "versions": "0+",
     "about": "Whether to include authorized operations."},
]

def _message(name: str, api_key: int, versions: str, fields: List[Dict[str, Any]]
             ) -> Dict[str, Dict[str, Any]]:
    """One message schema, keyed by its name, as Kafka's JSON files write it (flexible
    versions from 0 in all of these)."""
    return {name: {
        "apiKey": api_key, "type": "response" if name.endswith("Response") else "request",
        "name": name, "validVersions": versions, "flexibleVersions": "0+", "fields": fields,
    }}


SCHEMAS: Dict[str, Dict[str, Any]] = {
    # Version 1 is the same as version 0 (it says the client understands MemberType).
    **_message(
        "ConsumerGroupDescribeRequest", CONSUMER_GROUP_DESCRIBE_KEY, "0-1", _DESCRIBE_REQUEST),
    # Version 1 adds MemberType (KIP-1099).
    **_message(
        "ConsumerGroupDescribeResponse", CONSUMER_GROUP_DESCRIBE_KEY, "0-1", _described_groups([
        *_GROUP_HEADER,
        {"name": "Members", "type": "[]Member", "versions": "0+",
         "about": "The members.", "fields": [
            _MEMBER_ID,
            {"name": "InstanceId", "type": "string", "versions": "0+",
             "nullableVersions": "0+", "default": "null",
             "about": "The member instance ID."},
            *_MEMBER_COMMON,
            {"name": "SubscribedTopicRegex", "type": "string", "versions": "0+",
             "nullableVersions": "0+", "default": "null",
             "about": "The subscribed topic regex, or null."},
            _CURRENT_ASSIGNMENT,
            {"name": "TargetAssignment", "type": "Assignment", "versions": "0+",
             "about": "The target assignment.", "fields": _ASSIGNMENT},
            {"name": "MemberType", "type": "int8", "versions": "1+", "default": "-1",
             "ignorable": True,
             "about": "-1 for unknown. 0 for classic member. +1 for consumer member."},
        ]},
    ])),
    # Version 0 was used for early access of KIP-932 in Kafka 4.0, removed in 4.1.
    **_message("ShareGroupDescribeRequest", SHARE_GROUP_DESCRIBE_KEY, "1", _DESCRIBE_REQUEST),
    **_message("ShareGroupDescribeResponse", SHARE_GROUP_DESCRIBE_KEY, "1", _described_groups([
        *_GROUP_HEADER,
        {"name": "Members", "type": "[]Member", "versions": "0+",
         "about": "The members.", "fields": [
            _MEMBER_ID,
            *_MEMBER_COMMON,
            _CURRENT_ASSIGNMENT,
        ]},
    ])),
    # Version 1 is the same as version 0 (it asks for Lag in the response).
    **_message("DescribeShareGroupOffsetsRequest", DESCRIBE_SHARE_GROUP_OFFSETS_KEY, "0-1", [
        {"name": "Groups", "type": "[]DescribeShareGroupOffsetsRequestGroup",
         "versions": "0+", "about": "The groups to describe offsets for.", "fields": [
            {"name": "GroupId", "type": "string", "versions": "0+",
             "entityType": "groupId", "about": "The group identifier."},
            {"name": "Topics", "type": "[]DescribeShareGroupOffsetsRequestTopic",
             "versions": "0+", "nullableVersions": "0+",
             "about": "The topics to describe offsets for, or null for all "
                      "topic-partitions.", "fields": [
                {"name": "TopicName", "type": "string", "versions": "0+",
                 "entityType": "topicName", "about": "The topic name."},
                {"name": "Partitions", "type": "[]int32", "versions": "0+",
                 "about": "The partitions."},
            ]},
        ]},
    ]),
    # Version 1 adds Lag (KIP-1226).
    **_message("DescribeShareGroupOffsetsResponse", DESCRIBE_SHARE_GROUP_OFFSETS_KEY, "0-1", [
        _THROTTLE_TIME,
        {"name": "Groups", "type": "[]DescribeShareGroupOffsetsResponseGroup",
         "versions": "0+", "about": "The results for each group.", "fields": [
            {"name": "GroupId", "type": "string", "versions": "0+",
             "entityType": "groupId", "about": "The group identifier."},
            {"name": "Topics", "type": "[]DescribeShareGroupOffsetsResponseTopic",
             "versions": "0+", "about": "The results for each topic.", "fields": [
                {"name": "TopicName", "type": "string", "versions": "0+",
                 "entityType": "topicName", "about": "The topic name."},
                {"name": "TopicId", "type": "uuid", "versions": "0+",
                 "about": "The unique topic ID."},
                {"name": "Partitions", "type": "[]DescribeShareGroupOffsetsResponsePartition",
                 "versions": "0+", "fields": [
                    {"name": "PartitionIndex", "type": "int32", "versions": "0+",
                     "about": "The partition index."},
                    {"name": "StartOffset", "type": "int64", "versions": "0+",
                     "about": "The share-partition start offset."},
                    {"name": "LeaderEpoch", "type": "int32", "versions": "0+",
                     "about": "The leader epoch of the partition."},
                    {"name": "Lag", "type": "int64", "versions": "1+", "ignorable": True,
                     "default": "-1", "about": "The share-partition lag."},
                    {"name": "ErrorCode", "type": "int16", "versions": "0+",
                     "about": "The partition-level error code, or 0 if there was no "
                              "error."},
                    {"name": "ErrorMessage", "type": "string", "versions": "0+",
                     "nullableVersions": "0+", "default": "null",
                     "about": "The partition-level error message, or null if there was "
                              "no error."},
                ]},
            ]},
            {"name": "ErrorCode", "type": "int16", "versions": "0+",
             "about": "The group-level error code, or 0 if there was no error."},
            {"name": "ErrorMessage", "type": "string", "versions": "0+",
             "nullableVersions": "0+", "default": "null",
             "about": "The group-level error message, or null if there was no error."},
        ]},
    ]),
    # Version 1 adds IncludeTopologyDescription (KIP-1331), which we do not read.
    **_message("StreamsGroupDescribeRequest", STREAMS_GROUP_DESCRIBE_KEY, "0", _DESCRIBE_REQUEST),
    **_message("StreamsGroupDescribeResponse", STREAMS_GROUP_DESCRIBE_KEY, "0", _described_groups([
        *_GROUP_HEADER[:-1],  # all but AssignorName, which streams groups lack
        {"name": "Topology", "type": "Topology", "versions": "0+",
         "nullableVersions": "0+", "default": "null",
         "about": "The topology metadata currently initialized for the group.",
         "fields": [
            {"name": "Epoch", "type": "int32", "versions": "0+",
             "about": "The epoch of the currently initialized topology."},
            {"name": "Subtopologies", "type": "[]Subtopology", "versions": "0+",
             "nullableVersions": "0+", "default": "null",
             "about": "The subtopologies, or null if the group is uninitialized.",
             "fields": _SUBTOPOLOGY},
        ]},
        {"name": "Members", "type": "[]Member", "versions": "0+",
         "about": "The members.", "fields": _STREAMS_MEMBER},
    ])),
}


class _InlineSchema(type(ApiMessage)):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's message metaclass, taking the schema from SCHEMAS instead of a file."""

    def __new__(metacls, name: str, bases: Any, attrs: Dict[str, Any], **kw: Any) -> Any:
        if kw.get("init", True):
            schema = copy.deepcopy(SCHEMAS[name])
            attrs["_json"] = schema
            attrs["_struct"] = StructField(schema)
            attrs["__license__"] = "Apache-2.0 (Apache Kafka message schema)"
        # What JsonSchemaData.__new__ does after loading the file.
        return SlotsBuilder.__new__(metacls, name, bases, attrs, **kw)


class ConsumerGroupDescribeRequest(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """ConsumerGroupDescribe (API key 69): the groups of type `consumer` to describe."""


class ConsumerGroupDescribeResponse(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """ConsumerGroupDescribe's answer: each group's state and members with their assignments."""


class ShareGroupDescribeRequest(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """ShareGroupDescribe (API key 77): the groups of type `share` to describe."""


class ShareGroupDescribeResponse(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """ShareGroupDescribe's answer: each share group's state and members."""


class DescribeShareGroupOffsetsRequest(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """DescribeShareGroupOffsets (API key 90): the share groups whose start offsets to read."""


class DescribeShareGroupOffsetsResponse(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """DescribeShareGroupOffsets' answer: each share-partition's start offset (and lag, v1+)."""


class StreamsGroupDescribeRequest(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """StreamsGroupDescribe (API key 89): the groups of type `streams` to describe."""


class StreamsGroupDescribeResponse(ApiMessage, metaclass=_InlineSchema):  # type: ignore[misc]
    """StreamsGroupDescribe's answer: each streams group's state, topology and members."""


def supports(api_versions: Any, api_key: int) -> bool:
    """Whether a broker's ApiVersions (kafka-python's {key: (min, max)}) lists `api_key`."""
    return bool(api_versions) and api_key in api_versions
