"""The coordination group's Kafka edge: its topic, this replica's member, the shards assigned.

Each replica is a member of a Kafka consumer group (the coordination group) subscribed to a
topic with a partition per shard; the partitions assigned to a member are the shards it
owns. The cooperative sticky assignor moves a partition in two rebalances, taking it from
its owner in the first and giving it in the second, so no two members ever hold one at
once, and a member keeps the rest of its partitions across a rebalance. No record is ever
written to the topic or read from it: its partitions are paused as they are assigned.

Every method here blocks and must run in a worker thread, never on the reactor. The
rebalance listener runs on kafka-python's IO thread and hands each new set of shards to
`deliver` at once, before the rebalance that moves them on can complete.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, NamedTuple, Optional, Set

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import MemberState as KafkaMemberState
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from . import kafka_clients
from .config import ClusterConfig, ShardingConfig
from .errors import describe_error

# How long one poll waits: the member polls about once a second (coordination.MEMBER_TICK),
# which is when it joins a rebalance; heartbeats go on in kafka-python's IO thread meanwhile.
POLL_MS = 500
# While a rebalance is under way the member polls back to back, this long each, for at most
# a session (twice the rebalance timeout, see _join) and this margin, as kafka-python's own
# join request timeout.
JOINING_POLL_MS = 100
JOIN_MARGIN = 5.0
# The coordination topic holds no record: compacted and quickly cleaned should one appear.
TOPIC_CONFIGS = {"cleanup.policy": "compact", "retention.ms": "60000", "segment.ms": "60000"}
_AUTHORIZATION = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError,
                  GroupAuthorizationFailedError)


class CoordinationError(Exception):
    """The coordination cannot be set up; the message is one line saying why."""


class MemberPoll(NamedTuple):
    """What one poll of the member saw."""

    # the member's generation of the group, -1 while it is out of it
    generation: int
    # seconds since the coordinator last confirmed the member's session, None if it never did
    confirmed_ago: Optional[float]


def needs(sharding: ShardingConfig) -> str:
    """What the coordination needs of the cluster's ACLs, as errors say it."""
    return (f'needs Create and Describe on topic "{sharding.coordination_topic}" and Read on '
            f'group "{sharding.coordination_group}" (see the README, "Scaling out")')


def explain(error: BaseException, sharding: ShardingConfig) -> CoordinationError:
    """*error*, met setting up or running the coordination, as its one line."""
    if isinstance(error, CoordinationError):
        return error
    if isinstance(error, _AUTHORIZATION):
        return CoordinationError(
            f"not authorized ({type(error).__name__}): the shard coordination {needs(sharding)}")
    return CoordinationError(f"shard coordination: {describe_error(error)}")


class MemberIO:
    """One replica's member of the coordination group on one cluster; set up on first poll."""

    def __init__(
        self,
        cluster: ClusterConfig,
        sharding: ShardingConfig,
        deliver: Callable[[FrozenSet[int]], None],
    ) -> None:
        self._sharding = sharding
        self._deliver = deliver
        self._args: Dict[str, Any] = dict(cluster.kafka_args)
        self._args["bootstrap_servers"] = list(cluster.bootstrap_servers)
        self._consumer: Optional[KafkaConsumer] = None
        # the shards assigned now; changed only on kafka-python's IO thread (the listener)
        self._owned: Set[int] = set()
        self._generation = -1
        self._confirmed = float("-inf")  # time.monotonic() of the last confirmation
        # Set by stop_polling(): a poll waiting for a rebalance ends at its next turn.
        self._closing = False

    def poll(self) -> MemberPoll:
        """One poll: joins or rebalances as the group asks, and says how the session stands."""
        try:
            consumer = self._consumer or self._join()
            started = time.monotonic()
            consumer.poll(timeout_ms=POLL_MS)
            self._finish_rebalance(consumer)
            generation = consumer.group_metadata().generation_id
        except Exception as e:
            raise explain(e, self._sharding) from e
        # A generation joined during this poll: the coordinator answered its SyncGroup.
        if generation >= 0 and generation != self._generation:
            self._confirmed = max(self._confirmed, started)
        self._generation = generation
        self._confirmed = max(self._confirmed, _last_heartbeat(consumer))
        if self._confirmed == float("-inf"):
            return MemberPoll(generation, None)
        return MemberPoll(generation, max(0.0, time.monotonic() - self._confirmed))

    def _finish_rebalance(self, consumer: KafkaConsumer) -> None:
        """Poll back to back while a rebalance is under way.

        kafka-python 3.0.12 drops a JoinGroup answered between two polls: the next poll sends
        a new one, which starts a new rebalance, and a poll a second can go on so for ever.
        A poll that ends within the rebalance is followed at once by another, which waits on
        the JoinGroup in flight; poll() itself waits its whole timeout when there is no
        record, so they are short.
        """
        until = time.monotonic() + self._sharding.session_timeout + JOIN_MARGIN
        while (not self._closing and time.monotonic() < until
               and consumer.group_metadata().state == KafkaMemberState.REBALANCING):
            consumer.poll(timeout_ms=JOINING_POLL_MS)

    def stop_polling(self) -> None:
        """End, within JOINING_POLL_MS, a poll waiting for a rebalance; any thread may call it
        (it only sets a flag), so that the close queued behind that poll comes soon."""
        self._closing = True

    def close(self) -> None:
        """Leave the group (its shards go to the others at once) and close the clients."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False, timeout_ms=int(self._sharding.session_timeout * 1000))

    # -- setting up -------------------------------------------------------------------

    def _join(self) -> KafkaConsumer:
        self._ensure_topic()
        session_ms = int(self._sharding.session_timeout * 1000)
        consumer = kafka_clients.build(KafkaConsumer, {
            **self._args,
            "group_id": self._sharding.coordination_group,
            "enable_auto_commit": False,
            "allow_auto_create_topics": False,
            "partition_assignment_strategy": (CooperativeStickyAssignor,),
            "session_timeout_ms": session_ms,
            # A fifth of the session: a heartbeat or two may be lost before it expires.
            "heartbeat_interval_ms": max(100, session_ms // 5),
            # Also the rebalance timeout: how long a rebalance waits for a member that does
            # not rejoin (one that died as it began). Half a session: heartbeats pause while
            # a member waits in a rebalance, and its lease (coordination) must outlast the
            # wait. The members rejoin within a heartbeat and a poll, well within it.
            "max_poll_interval_ms": session_ms // 2,
        })
        consumer.subscribe([self._sharding.coordination_topic], listener=_Listener(self, consumer))
        self._consumer = consumer
        return consumer

    def _ensure_topic(self) -> None:
        """The coordination topic, created with a partition per shard if it is missing."""
        admin = kafka_clients.build(KafkaAdminClient, self._args)
        try:
            partitions = self._partitions(admin)
            if partitions is None:
                try:
                    admin.create_topics({self._sharding.coordination_topic: {
                        "num_partitions": self._sharding.shards, "replication_factor": 1,
                        "configs": TOPIC_CONFIGS}})
                except TopicAlreadyExistsError:  # another replica created it meanwhile
                    pass
                admin.wait_for_topics([self._sharding.coordination_topic])
                partitions = self._partitions(admin)
        finally:
            admin.close()
        if partitions != self._sharding.shards:
            raise CoordinationError(
                f'coordination topic "{self._sharding.coordination_topic}" has {partitions} '
                f"partitions but exporter.sharding.shards is {self._sharding.shards}: set "
                "shards to its partition count, or delete the topic to have it made again")

    def _partitions(self, admin: KafkaAdminClient) -> Optional[int]:
        """The coordination topic's partition count; None if it does not exist."""
        [topic] = admin.describe_topics([self._sharding.coordination_topic])
        error = for_code(topic.get("error_code") or 0)
        if error is UnknownTopicOrPartitionError:
            return None
        if topic.get("error_code"):
            raise error()
        return len(topic["partitions"])

    # -- on kafka-python's IO thread --------------------------------------------------

    def partitions_changed(
        self, consumer: KafkaConsumer, added: Iterable[Any], removed: Iterable[Any]
    ) -> None:
        """The listener's news: partitions assigned and taken away."""
        gained = {tp.partition for tp in added}
        self._owned = (self._owned - {tp.partition for tp in removed}) | gained
        if gained:  # nothing to fetch from it: paused, the member only heartbeats
            consumer.pause(*added)
        self._deliver(frozenset(self._owned))


def _last_heartbeat(consumer: KafkaConsumer) -> float:
    """time.monotonic() of the last heartbeat the coordinator answered.

    kafka-python 3.0 keeps it on its coordinator only (its metrics give the last one sent,
    answered or not): read there, in this one place.
    """
    return float(consumer._coordinator.heartbeat.last_receive)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """Hands every change of the member's partitions to its MemberIO."""

    def __init__(self, io: MemberIO, consumer: KafkaConsumer) -> None:
        self._io = io
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self._io.partitions_changed(self._consumer, (), revoked)

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        self._io.partitions_changed(self._consumer, assigned, ())

    def on_partitions_lost(self, lost: Iterable[Any]) -> None:
        self._io.partitions_changed(self._consumer, (), lost)
