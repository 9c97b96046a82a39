"""Kafka I/O: the blocking kafka-python calls of one cluster, answered as plain typed data.

Nothing here decides what to keep: names are not filtered, leaderless partitions and
topics with errors are returned, -1 offsets are passed on. That policy is `selection`'s.
What is here is about the wire: how requests are batched, and asking again group by
group when one group's error fails a batched request.

Every method here blocks and must run in a worker thread, never on the reactor.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import (
    Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple,
)

from kafka import TopicPartition
from kafka.net.compat import KafkaNetClient
from kafka.admin import (
    ConfigResource,
    ConfigResourceType,
    KafkaAdminClient,
    OffsetSpec,
)
from kafka.errors import (
    BrokerResponseError,
    KafkaConnectionError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    IncompatibleBrokerVersion,
    KafkaError,
    KafkaTimeoutError,
    NotCoordinatorError,
    for_code,
)

from . import kafka_clients, kafka_protocol, record_fetch
from .config import Performance
from .errors import describe_error
from .group_answers import (
    consumer_group_info,
    group_info,
    share_group_info,
    share_group_offsets,
    streams_group_info,
)
from .model import (
    TP,
    GroupType,
    CommittedOffsets,
    GroupDescriptions,
    GroupInfo,
    ListedGroup,
    Member,
    RecordKey,
    ShareGroupInfo,
    ShareGroupsRead,
    ShareOffset,
    TopicDescription,
)
from .record_age import RecordTime
from .timestamps import FetchItem

# Groups per DescribeGroups call: bounds one request's size on clusters with thousands of groups.
DESCRIBE_BATCH = 500


def _error_text(code: int, message: Optional[str]) -> str:
    error = for_code(code)
    return f"{error.__name__}: {message}" if message else error.__name__


def not_offered(api_key: int) -> str:
    """The reason given for a group whose request the broker's ApiVersions does not list."""
    return f"the broker does not offer {kafka_protocol.API_NAMES[api_key]} (API key {api_key})"


# Group errors that mean "ask again": the coordinator moved or is loading the group.
_COORDINATOR_MOVED = frozenset({
    CoordinatorLoadInProgressError.errno, CoordinatorNotAvailableError.errno,
    NotCoordinatorError.errno,
})
# How a describe request says a group is not of its kind.
_NOT_THIS_KIND = ("GroupIdNotFoundError", "not a classic group", "not a consumer group")


def _changed(name: str, reasons: Mapping[str, str]) -> bool:
    """Whether the describe of `name` failed because the group is of the other kind now."""
    return name in reasons and any(marker in reasons[name] for marker in _NOT_THIS_KIND)


class Watermarks(NamedTuple):
    """Partition -> earliest and -> end offset, as the leaders answered."""

    earliest: Dict[TP, int]
    latest: Dict[TP, int]


class _Answers(NamedTuple):
    """The groups of a request's responses answered without an error, and why the others
    were not (group -> one line)."""

    groups: List[Any]
    failed: Dict[str, str]


class AdminReads:
    """The admin requests of one cycle's read, all on one admin client."""

    def __init__(self, admin: KafkaAdminClient, offset_fetch_timeout: float) -> None:
        self._admin = admin
        self._offset_fetch_timeout_ms = int(offset_fetch_timeout * 1000)

    def listed_groups(self) -> List[ListedGroup]:
        """Every group the cluster lists, of every type, with its type.

        A broker before ListGroups v5 (Kafka 3.8) gives no type: its groups are all classic.
        """
        return [
            ListedGroup(g["group_id"], GroupType.listed(g.get("group_type")))
            for g in self._admin.list_groups()
        ]

    def describe_groups(self, groups: Sequence[ListedGroup]) -> GroupDescriptions:
        """The description of each group, or why it came back without one.

        Classic groups go to DescribeGroups, consumer groups to ConsumerGroupDescribe and
        streams groups to StreamsGroupDescribe where the broker has them. A group that
        changed type since it was listed (a classic group migrating to the consumer
        protocol, or back) is asked again with the other request.
        Share groups are not asked about: they are not given here (see selection).
        """
        types = {g.name: g.group_type for g in groups}
        of = {kind: [n for n, t in types.items() if t is kind] for kind in GroupType}
        described: Dict[str, GroupInfo] = {}
        reasons: Dict[str, str] = {}

        def ask(how: Callable[[Sequence[str]], Tuple[Dict[str, GroupInfo], Dict[str, str]]],
                names: Sequence[str]) -> Dict[str, str]:
            got, failed = how(names)
            described.update(got)
            reasons.update(failed)
            return failed

        classic = ask(self._describe_classic, of[GroupType.CLASSIC])
        consumer = ask(self._describe_consumer, of[GroupType.CONSUMER]
                       + [n for n in of[GroupType.CLASSIC] if _changed(n, classic)])
        ask(self._describe_classic, [n for n in of[GroupType.CONSUMER] if _changed(n, consumer)])
        ask(self._describe_streams, of[GroupType.STREAMS])
        for name in described:
            reasons.pop(name, None)
        return GroupDescriptions(
            # The type is what the describe that answered says (a migrating group's changes).
            described={n: described[n] for n in types if n in described},
            failed=tuple(n for n in types if n in reasons),
            reasons={n: reasons[n] for n in types if n in reasons},
            types=types,
        )

    def _describe_classic(
        self, names: Sequence[str]
    ) -> Tuple[Dict[str, GroupInfo], Dict[str, str]]:
        described: Dict[str, GroupInfo] = {}
        failed: Dict[str, str] = {}
        for start in range(0, len(names), DESCRIBE_BATCH):
            answered = self._admin.describe_groups(names[start : start + DESCRIBE_BATCH])
            for name, raw in answered.items():
                if raw.get("error"):
                    failed[name] = str(raw["error"])
                else:
                    described[name] = group_info(name, raw)
        return described, failed

    def _describe_consumer(
        self, names: Sequence[str]
    ) -> Tuple[Dict[str, GroupInfo], Dict[str, str]]:
        return self._describe_with(names, kafka_protocol.CONSUMER_GROUP_DESCRIBE_KEY,
                                   kafka_protocol.ConsumerGroupDescribeRequest, consumer_group_info)

    def _describe_streams(
        self, names: Sequence[str]
    ) -> Tuple[Dict[str, GroupInfo], Dict[str, str]]:
        return self._describe_with(names, kafka_protocol.STREAMS_GROUP_DESCRIBE_KEY,
                                   kafka_protocol.StreamsGroupDescribeRequest, streams_group_info)

    def _describe_with(
        self, names: Sequence[str], api_key: int, request: Any, info: Callable[[Any], GroupInfo]
    ) -> Tuple[Dict[str, GroupInfo], Dict[str, str]]:
        answers = self._answers(names, api_key, lambda ids: request(
            group_ids=ids, include_authorized_operations=False))
        return {g.group_id: info(g) for g in answers.groups}, answers.failed

    # -- share groups (KIP-932) ----------------------------------------------------

    def read_share_groups(self, names: Sequence[str]) -> ShareGroupsRead:
        """Each named share group's state and members, and its share-partition start offsets.

        Each request goes only to a broker whose ApiVersions lists it (ShareGroupDescribe,
        key 77; DescribeShareGroupOffsets, key 90), at the group's coordinator. A group the
        coordinator answers with an error, or a broker without the request, leaves it out of
        `described` or `offsets`, with the reason in `failed` (a group's first reason: one
        line says what went wrong first); it is still `asked`.
        """
        if not names:
            return ShareGroupsRead()
        described = self._answers(names, kafka_protocol.SHARE_GROUP_DESCRIBE_KEY,
                                  self._share_describe_request)
        offsets = self._answers(names, kafka_protocol.DESCRIBE_SHARE_GROUP_OFFSETS_KEY,
                                self._share_offsets_request)
        return ShareGroupsRead(
            described={g.group_id: share_group_info(g) for g in described.groups},
            offsets={g.group_id: share_group_offsets(g) for g in offsets.groups},
            asked=tuple(names),
            failed={**offsets.failed, **described.failed},
        )

    def _answers(
        self, names: Sequence[str], api_key: int, build: Callable[[List[str]], Any]
    ) -> _Answers:
        """*api_key*'s answers for *names*, sent to each group's coordinator, where the
        broker's ApiVersions lists the request. Groups whose coordinator moved or was
        loading are asked once more, after the coordinator is looked up again."""
        request = kafka_protocol.API_NAMES[api_key]
        if not names:
            return _Answers([], {})
        if not self._offers(api_key):
            return _Answers([], {n: not_offered(api_key) for n in names})
        answers = _Answers([], {})
        pending = list(names)
        for _attempt in range(2):
            try:
                responses = self._admin._manager.run(self._per_coordinator, pending, build)
            except IncompatibleBrokerVersion:  # a coordinator that lacks the request
                answers.failed.update({n: not_offered(api_key) for n in pending})
                break
            except KafkaError as e:  # no coordinator found
                answers.failed.update({n: f"{request} failed: {describe_error(e)}"
                                       for n in pending})
                break
            pending = []
            for group in (g for response in responses for g in response.groups):
                if not group.error_code:
                    answers.groups.append(group)
                    answers.failed.pop(group.group_id, None)
                    continue
                answers.failed[group.group_id] = f"{request}: " + _error_text(
                    group.error_code, group.error_message)
                if group.error_code in _COORDINATOR_MOVED:
                    pending.append(group.group_id)
            if not pending:
                break
        return answers

    def _offers(self, api_key: int) -> bool:
        """Whether the broker's ApiVersions lists *api_key*."""
        data = self._admin._manager.broker_version_data
        return kafka_protocol.supports(data.api_versions if data else None, api_key)

    @staticmethod
    def _share_describe_request(names: List[str]) -> Any:
        return kafka_protocol.ShareGroupDescribeRequest(
            group_ids=names, include_authorized_operations=False
        )

    @staticmethod
    def _share_offsets_request(names: List[str]) -> Any:
        request = kafka_protocol.DescribeShareGroupOffsetsRequest
        group = request.DescribeShareGroupOffsetsRequestGroup
        # Topics null: every topic-partition the group has a share-partition on.
        return request(groups=[group(group_id=n, topics=None) for n in names])

    async def _per_coordinator(
        self, names: List[str], build: Callable[[List[str]], Any]
    ) -> List[Any]:
        # Every group kind is found the same way: FindCoordinator with key type GROUP; one
        # request per coordinator and batch of DESCRIBE_BATCH groups.
        coordinators = await self._admin._find_coordinator_ids(names)
        by_node: Dict[int, List[str]] = {}
        for name in names:
            by_node.setdefault(coordinators[name], []).append(name)
        responses = []
        for node, node_names in by_node.items():
            for start in range(0, len(node_names), DESCRIBE_BATCH):
                request = build(node_names[start : start + DESCRIBE_BATCH])
                responses.append(await self._admin._manager.send(request, node_id=node))
        return responses

    def committed_offsets(self, names: Sequence[str]) -> CommittedOffsets:
        """Every committed offset of the named groups, -1 (none committed) included."""
        if not names:
            return CommittedOffsets(by_group={})
        unavailable: List[str] = []
        try:
            raw = self._admin.list_group_offsets(list(names))
        except BrokerResponseError:
            # One group's error fails the whole batched request; ask group by group so
            # the others are still answered and only the broken one is left out.
            raw = {}
            for name in names:
                try:
                    raw.update(self._admin.list_group_offsets([name]))
                except BrokerResponseError:
                    unavailable.append(name)
        # Each group's answer decodes topic names of its own: interned, every row of a topic
        # (and every label tuple made from them) shares one string.
        intern = sys.intern
        by_group = {
            name: {(intern(tp.topic), tp.partition): meta.offset for tp, meta in offsets.items()}
            for name, offsets in raw.items()
        }
        return CommittedOffsets(by_group=by_group, unavailable=tuple(unavailable))

    def describe_topics(self) -> Tuple[TopicDescription, ...]:
        """Every topic of the cluster metadata, with its error code and partition leaders."""
        return tuple(
            TopicDescription(
                name=topic["name"],
                error_code=topic.get("error_code") or 0,
                leaders={p["partition_index"]: p["leader_id"] for p in topic["partitions"]},
            )
            for topic in self._admin.describe_topics()
        )

    def watermarks(self, leaders: Mapping[TP, int]) -> "Watermarks":
        """Each partition's earliest and end offsets as its leader answered them.

        One ListOffsets of each kind per leader, all in flight at once, to the leaders the
        cycle's metadata named (no metadata request of their own). A partition without a
        leader, or answered with an error, is left out (its watermarks are unknown).
        """
        by_leader: Dict[int, List[TP]] = {}
        for tp, leader in leaders.items():
            if leader >= 0:
                by_leader.setdefault(leader, []).append(tp)
        watermarks = Watermarks({}, {})
        if by_leader:
            self._admin._manager.run(self._list_offsets, by_leader, watermarks)
        return watermarks

    async def _list_offsets(self, by_leader: Mapping[int, List[TP]], into: "Watermarks") -> None:
        sent = []
        for leader, tps in by_leader.items():
            for spec, found in ((OffsetSpec.EARLIEST, into.earliest),
                                (OffsetSpec.LATEST, into.latest)):
                request = KafkaAdminClient._list_partition_offsets_request(
                    {TopicPartition(topic, partition): spec for topic, partition in tps}, 0)
                sent.append((found, self._admin._manager.send(
                    request, node_id=leader, request_timeout_ms=self._offset_fetch_timeout_ms)))
        for found, answer in sent:
            response = await answer
            for topic in response.topics:
                for p in topic.partitions:
                    if not p.error_code:
                        found[(topic.name, p.partition_index)] = p.offset

    def cleanup_policies(self, topics: Sequence[str]) -> Dict[str, str]:
        """Each named topic's cleanup.policy value, "" when the broker gave none."""
        if not topics:
            return {}
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, t, {"cleanup.policy": None}) for t in topics
        ]
        found = self._admin.describe_configs(resources, config_filter="all").get("topic", {})
        return {
            topic: found.get(topic, {}).get("cleanup.policy", {}).get("value") or ""
            for topic in topics
        }


NO_CONSUMER_GROUP_DESCRIBE = not_offered(kafka_protocol.CONSUMER_GROUP_DESCRIBE_KEY)


class _Connecting:
    """An admin client under construction, which a reset() can close before it is done.

    KafkaAdminClient's constructor blocks until a broker answers (bootstrap_timeout_ms);
    closing the network client it made fails that wait, and the constructor raises.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Optional[KafkaNetClient] = None
        self.closed = False

    def network_client(self, **configs: Any) -> KafkaNetClient:
        """The admin client's `kafka_client` factory: kafka-python's own, kept to close."""
        client = KafkaNetClient(**configs)
        with self._lock:
            self._client, closed = client, self.closed
        if closed:
            client.close()
        return client

    def close(self) -> None:
        with self._lock:
            self.closed, client = True, self._client
        if client is not None:
            client.close()


class KafkaIO:
    """One cluster's kafka-python client: the admin client, whose connections carry every
    request of a cycle, the timestamp Fetches included."""

    def __init__(
        self,
        bootstrap_servers: Iterable[str],
        kafka_args: Mapping[str, Any],
        performance: Performance,
    ) -> None:
        self.performance = performance
        self._args: Dict[str, Any] = dict(kafka_args)
        self._args["bootstrap_servers"] = list(bootstrap_servers)
        timeout_ms = int(performance.kafka_timeout * 1000)
        self._args.setdefault("request_timeout_ms", timeout_ms)
        # kafka-python's own 30 s bootstrap default would outlast our cycle timeout; ending a
        # little before it lets a failed bootstrap report its cause (kafka_clients.build)
        # instead of losing the race to the cycle's "timed out".
        self._args.setdefault("bootstrap_timeout_ms", int(timeout_ms * 0.8))
        self._admin: Optional[KafkaAdminClient] = None
        self._connecting: Set[_Connecting] = set()
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------

    def admin(self) -> KafkaAdminClient:
        """The cluster's admin client, created on first use.

        A reset() while it is being created closes it too: the constructor then fails at
        once instead of waiting for a broker that does not answer.
        """
        with self._lock:
            if self._admin is not None:
                return self._admin
            connecting = _Connecting()
            self._connecting.add(connecting)
        # The constructor blocks until a broker answers: outside the lock, so that reset()
        # after a timed-out cycle never waits for it.
        args = {**self._args, "kafka_client": connecting.network_client}
        try:
            admin = kafka_clients.build(KafkaAdminClient, args)
        except BaseException:
            with self._lock:
                self._connecting.discard(connecting)
            raise
        with self._lock:
            self._connecting.discard(connecting)
            keep = self._admin is None and not connecting.closed
            if keep:
                self._admin = admin
            current = self._admin
        if keep:
            return admin
        admin.close()
        if current is None:  # reset as it connected: the cycle that asked is being ended
            raise KafkaConnectionError("the client was reset while it connected")
        return current

    def admin_reads(self) -> AdminReads:
        """The reads of one cycle, on the admin client of that moment.

        Every request of a cycle goes to that one client: a reset() while the cycle still
        runs never makes the rest of it connect a new one.
        """
        return AdminReads(self.admin(), self.performance.offset_fetch_timeout)

    def reset(self) -> None:
        """Drop the clients after a failure, so the next cycle reconnects from scratch.

        Closing them fails whatever a thread still waits for in kafka-python (a request, or
        the bootstrap of a client being created), so no thread outlives the cycle that
        timed out, or the stop.
        """
        with self._lock:
            admin, self._admin = self._admin, None
            connecting, self._connecting = self._connecting, set()
        closes: List[Callable[[], Any]] = [c.close for c in connecting]
        if admin is not None:
            closes.append(admin.close)
        for close in closes:
            try:
                close()
            except Exception:  # closing a broken client may fail; it is gone either way
                pass

    # -- timestamps -----------------------------------------------------------

    def fetch_timestamps(self, items: List[FetchItem]) -> Dict[RecordKey, RecordTime]:
        """Timestamps of the first record a read_committed consumer receives at or after each offset.

        Transaction markers and aborted records are never dated. A key followed only by them
        (or by nothing compaction left) up to its partition's end maps to CaughtUp; a key
        whose read is held by an open transaction maps to the time of the first record the
        read stops at (that transaction's first record), read uncommitted. A record without
        a timestamp maps to None; a key not answered in time, or on a partition without a
        leader, is left out (unknown).
        """
        # Return what was found a little before the cycle's own timeout gives up on us.
        deadline = time.monotonic() + 0.8 * self.performance.kafka_timeout
        found: Dict[RecordKey, RecordTime] = {}
        by_leader: Dict[int, List[FetchItem]] = {}
        for item in items:
            by_leader.setdefault(item.leader, []).append(item)
        for leader, led in by_leader.items():
            if leader >= 0:
                found.update(self._read_led_by(leader, led, deadline))
        return found

    def _read_led_by(
        self, leader: int, items: List[FetchItem], deadline: float
    ) -> Dict[RecordKey, RecordTime]:
        admin = self.admin()

        def start(request: Any, timeout: float) -> Callable[[], Any]:
            answered = threading.Event()
            future = admin._manager.call_soon(self._send, admin, request, leader,
                                              max(1, int(timeout * 1000)))
            future.add_both(lambda _: answered.set())

            def wait() -> Any:
                # The request's own timeout fails it first; this is the backstop.
                if not answered.wait(timeout + 1):
                    raise KafkaTimeoutError(f"no Fetch answer from node {leader} in time")
                if future.failed():
                    raise future.exception
                return future.value

            return wait

        first = record_fetch.read(items, start, True, deadline)
        if not first.held or time.monotonic() >= deadline:
            return first.found
        # Each held read stopped at its partition's last stable offset: what it waits for
        # is the first record from there on, which only an uncommitted read can see yet.
        probes = {key: FetchItem((key[0], key[1], max(key[2], at)), end, leader)
                  for key, (at, end) in first.held.items()}
        second = record_fetch.read(sorted(set(probes.values())), start, False, deadline)
        found = dict(first.found)
        for key, probe in probes.items():
            if probe.key in second.found:
                found[key] = second.found[probe.key]
        return found

    @staticmethod
    async def _send(admin: KafkaAdminClient, request: Any, node: int, timeout_ms: int) -> Any:
        return await admin._manager.send(request, node_id=node, request_timeout_ms=timeout_ms)
