"""This replica in one coordination group, as a Twisted service: which shards it owns now.

A SerialLoop polls the member (coordination_io.MemberIO) in a thread of its own about once
a second; the shards assigned come from its rebalance listener the moment they change. The
member owns them while its session is confirmed: each heartbeat the coordinator answers (or
generation it joins) renews a lease of one session timeout. When the lease runs out (the
coordinator is lost, the network cut) the shards are dropped, since by then the coordinator
may have given them to others: no two replicas claim a shard for longer than the session
timeout. The pollers that follow the member hear every change on the reactor thread.
"""

from __future__ import annotations

import random
from typing import Any, Callable, FrozenSet, Generator, List, Optional, Protocol, cast

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .backoff import backoff_delay
from .config import ClusterConfig, ShardingConfig, ShardMode
from .coordination_io import CoordinationError, MemberIO, MemberPoll
from .errors import describe_error
from .loop import RunEnd, SerialLoop
from .poller import RunInThread
from .sharding import (
    Lease, MemberState, Membership, Shards, membership_of, no_shard, rebalances_after,
    static_membership,
)

# Seconds between polls of the member: how soon it joins a rebalance the group started.
MEMBER_TICK = 1.0
# Retries of a failing set-up (missing ACLs, a broker down) back off to this.
RETRY_CAP = 30.0
# How long the stop waits for the member to leave the group and close.
CLOSE_TIMEOUT = 3.0


class MemberEdge(Protocol):
    """The blocking Kafka edge of a member (MemberIO, or a test fake)."""

    def poll(self) -> MemberPoll: ...

    def stop_polling(self) -> None: ...

    def close(self) -> None: ...


# Makes a MemberEdge from the cluster, the settings and where its shards go (on Kafka's thread).
MemberFactory = Callable[
    [ClusterConfig, ShardingConfig, Callable[[FrozenSet[int]], None]], MemberEdge]


def first_membership(sharding: ShardingConfig) -> Membership:
    """What a replica owns at its start: its static shard, or nothing until it joins."""
    if sharding.mode is ShardMode.STATIC and sharding.shard is not None:
        return static_membership(Shards(sharding.shards, frozenset({sharding.shard})))
    return Membership(MemberState.JOINING, no_shard(sharding.shards))


class ShardMember(service.Service):
    """The replica's member of the coordination group hosted by `cluster`."""

    log = Logger()
    name: str

    def __init__(
        self,
        cluster: ClusterConfig,
        sharding: ShardingConfig,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        call_from_thread: Callable[..., None],
        io_factory: MemberFactory = MemberIO,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = cluster.name
        self.cluster = cluster
        self.sharding = sharding
        self._clock = clock
        self._run = run_in_thread
        self._io = io_factory(
            cluster, sharding, lambda owned: call_from_thread(self._assigned_now, owned))
        #: Called with every new Membership, on the reactor thread.
        self.followers: List[Callable[[Membership], None]] = []
        self.membership = first_membership(sharding)
        self._assigned: FrozenSet[int] = frozenset()
        self._generation = -1
        self._rebalances = 0
        self._lease = Lease.NONE
        self._lease_end: Optional[IDelayedCall] = None
        self._error = ""
        self._loop: SerialLoop[MemberPoll] = SerialLoop(
            clock, MEMBER_TICK, lambda: self._run(self._io.poll),
            backoff=lambda failures: backoff_delay(failures, RETRY_CAP, jitter),
            label=f"cluster {cluster.name}: shard coordination", on_end=self._polled,
        )

    def startService(self) -> None:
        super().startService()
        self._loop.start(now=True)

    @defer.inlineCallbacks
    def stopService(self) -> Generator["defer.Deferred[Any]", Any, None]:
        """Leaves the group, so that the others take its shards over at once."""
        super().stopService()
        self._loop.stop()
        if self._lease_end is not None and self._lease_end.active():
            self._lease_end.cancel()
        # The member's one thread runs the close after the poll in progress, if any, which
        # stop_polling() cuts short should it wait for a rebalance.
        self._io.stop_polling()
        closing = self._run(self._io.close).addTimeout(CLOSE_TIMEOUT, self._clock)
        yield closing.addErrback(self._close_failed)

    def _close_failed(self, failure: Failure) -> None:
        self.log.warn("cluster {cluster}: leaving the coordination group: {reason}",
                      cluster=self.name, reason=describe_error(cast(BaseException, failure.value)))

    # -- news from the member -----------------------------------------------------------

    def _assigned_now(self, owned: FrozenSet[int]) -> None:
        self._assigned = owned
        self._publish()

    def _polled(self, end: RunEnd[MemberPoll]) -> None:
        if isinstance(end.outcome, Failure):
            self._failed(cast(BaseException, end.outcome.value))
            return
        if self._error:
            self.log.info("cluster {cluster}: shard coordination set up", cluster=self.name)
            self._error = ""
        poll = end.outcome
        self._rebalances = rebalances_after(self._rebalances, self._generation, poll.generation)
        self._generation = poll.generation
        if poll.confirmed_ago is not None:
            self._renew(self.sharding.session_timeout - poll.confirmed_ago)
        self._publish()

    def _failed(self, error: BaseException) -> None:
        reason = str(error) if isinstance(error, CoordinationError) else describe_error(error)
        if reason != self._error:  # once per reason, not once a retry
            self.log.error("cluster {cluster}: {reason}; retrying", cluster=self.name,
                           reason=reason)
        self._error = reason
        self._publish()

    def _renew(self, left: float) -> None:
        """The session holds for *left* more seconds, as the last confirmation says."""
        if self._lease_end is not None and self._lease_end.active():
            self._lease_end.cancel()
        if left <= 0:
            self._lease_ended()
            return
        if self._lease is Lease.EXPIRED:
            self.log.info("cluster {cluster}: the coordination group's coordinator answers "
                          "again", cluster=self.name)
        self._lease = Lease.VALID
        self._lease_end = self._clock.callLater(left, self._lease_ended)

    def _lease_ended(self) -> None:
        if self._lease is not Lease.EXPIRED:
            self.log.warn(
                "cluster {cluster}: no word from the coordination group's coordinator for "
                "{session:g}s: dropping {shards} shard(s) until it answers",
                cluster=self.name, session=self.sharding.session_timeout,
                shards=len(self.membership.shards.owned))
        self._lease = Lease.EXPIRED
        self._publish()

    def _publish(self) -> None:
        membership = membership_of(self.sharding.shards, self._assigned, self._generation,
                                   self._lease, self._rebalances, self._error)
        if membership == self.membership:
            return
        if membership.shards != self.membership.shards:
            owned = sorted(membership.shards.owned)
            self.log.info("cluster {cluster}: {state}, owns {n} of {count} shard(s): {owned}",
                          cluster=self.name, state=membership.state, n=len(owned),
                          count=self.sharding.shards, owned=",".join(map(str, owned)) or "-")
        self.membership = membership
        for follow in list(self.followers):
            follow(membership)
