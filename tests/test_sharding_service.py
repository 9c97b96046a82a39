"""A sharded replica on a task.Clock: the poller that cuts its snapshots, the member's lease,
/ready and the sharding series. Fakes stand in for Kafka; the real thing is in
test_sharding_broker.py.

With 2 shards, group ga and topic t1 are shard 1, group gb and topic t2 shard 0.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple, Union

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task
from twisted.logger import globalLogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test._util import _render
from twisted.web.test.requesthelper import DummyRequest

from klag_collector.config import ShardingConfig, ShardMode, parse_config
from klag_collector.coordination import MEMBER_TICK, ShardMember, first_membership
from klag_collector.coordination_io import CoordinationError, MemberPoll
from klag_collector.model import ClusterData, GroupInfo
from klag_collector.render import MetricsRenderer, Variant
from klag_collector.shard_poller import ShardedPoller
from klag_collector.sharding import MemberState, Membership, Shards, ShardScope, no_shard
from klag_collector.web import make_root
from fakes import run_now

T0 = 1_700_000_000.0
CONFIG = """
[exporter]
poll_interval = "10s"
staleness_threshold = "30s"
granularity = "partition"
[exporter.timestamp_sampling]
enabled = false
[exporter.sharding]
mode = "kafka"
shards = 2
session_timeout = "6s"
[[clusters]]
name = "c"
bootstrap_servers = "127.0.0.1:1"
"""
BOTH, SHARD0 = Shards(2, frozenset({0, 1})), Shards(2, frozenset({0}))
# Every partition of t1 and t2, 10 records each.
PARTITIONS = [("t1", 0), ("t1", 1), ("t2", 0)]


def member(shards: Shards, rebalances: int = 1) -> Membership:
    return Membership(MemberState.MEMBER, shards, rebalances)


class ScopedSource:
    """A Source whose reads are for the scope's shards: ga (on t2/0) for shard 1, gb (on
    t1/0) for shard 0, and the watermarks a read for those shards asks for."""

    def __init__(self) -> None:
        self.scope: Optional[ShardScope] = None
        self.reads: List[Shards] = []

    def read(self, now: float) -> ClusterData:
        assert self.scope is not None
        shards = self.scope.for_read()
        self.reads.append(shards)
        groups = {name: {tp: 5} for name, tp in (("ga", ("t2", 0)), ("gb", ("t1", 0)))
                  if shards.owns(name)}
        wanted = {tp for tp in PARTITIONS if shards.owns(tp[0])}
        wanted |= {tp for offsets in groups.values() for tp in offsets}
        return ClusterData(groups={g: GroupInfo(g, "Empty") for g in groups}, committed=groups,
                           earliest={tp: 0 for tp in wanted}, latest={tp: 10 for tp in wanted})

    def fetch_timestamps(self, items: List[Any]) -> Dict[Any, Any]:
        return {}

    def reset(self) -> None:
        pass


Series = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


class ShardedReplicaTests(SynchronousTestCase):
    """One sharded poller, its renderer and the HTTP tree on one Clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        config = parse_config(CONFIG, "c.toml", "toml", {})
        assert config.exporter.sharding is not None
        self.source = ScopedSource()
        membership = first_membership(config.exporter.sharding)
        self.source.scope = ShardScope(membership.shards)
        self.poller = ShardedPoller(config.clusters[0], config.exporter, self.source, self.clock,
                                    run_now, self.source.scope, membership,
                                    on_change=lambda: self.renderer.invalidate())
        self.renderer = MetricsRenderer([self.poller], config.exporter.granularity, self.clock,
                                        run_now)
        self.root = make_root(self.renderer, [self.poller], config.exporter.ready_requires,
                              self.clock)
        self.poller.startService()
        self.addCleanup(lambda: self.successResultOf(self.poller.stopService()))

    def get(self, path: bytes) -> Tuple[int, bytes]:
        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        self.successResultOf(_render(getChildForRequest(self.root, request), request))
        return request.responseCode or 200, b"".join(request.written)

    def series(self) -> Series:
        rendered = self.renderer.current
        assert rendered is not None
        text = rendered.body(Variant(openmetrics=False, gzipped=False)).decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    def named(self, name: str, label: str) -> Set[str]:
        return {dict(labels)[label] for (n, labels) in self.series() if n == name}

    def ready(self) -> Tuple[int, Dict[str, Any]]:
        status, body = self.get(b"/ready")
        return status, json.loads(body)

    def value(self, name: str) -> float:
        [found] = [v for (n, _), v in self.series().items() if n == name]
        return found

    def test_before_it_joins_it_reads_nothing_and_is_not_ready(self) -> None:
        """Joining, it owns no shard: its cycle asks about no group, /ready says so, 503."""
        self.assertEqual(self.source.reads, [no_shard(2)])
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), set())
        status, answer = self.ready()
        self.assertEqual(status, 503)
        self.assertEqual(answer["clusters"]["c"]["sharding"], {
            "state": "joining", "shards": 2, "owned": [], "collected": False, "rebalances": 0,
            "error": ""})
        self.assertEqual(self.value("kafka_lag_exporter_shards_owned"), 0.0)

    def test_its_series_are_the_groups_and_topics_of_its_shards(self) -> None:
        """Owning both shards after a cycle: both groups, both topics, ready."""
        self.poller.follow(member(BOTH))
        self.assertEqual(self.ready()[0], 503)  # assigned, not collected yet
        self.clock.advance(10)
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), {"ga", "gb"})
        self.assertEqual(self.named("kafka_partition_latest_offset", "topic"), {"t1", "t2"})
        status, answer = self.ready()
        self.assertEqual((status, answer["clusters"]["c"]["sharding"]["owned"]), (200, [0, 1]))
        self.assertEqual(self.value("kafka_lag_exporter_shards_owned"), 2.0)
        self.assertEqual(self.value("kafka_lag_exporter_rebalances_total"), 1.0)

    def test_a_revoked_shard_leaves_metrics_at_once_and_an_assigned_one_comes_next_cycle(
        self,
    ) -> None:
        self.poller.follow(member(BOTH))
        self.clock.advance(10)
        reads = len(self.source.reads)
        self.poller.follow(member(SHARD0, rebalances=2))
        # No cycle ran: the snapshot served was cut. gb stays with the watermarks of t2 and
        # gb's lag on t1/0 (another shard's topic); ga and t1's watermarks are gone.
        self.assertEqual(len(self.source.reads), reads)
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), {"gb"})
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "topic"), {"t1"})
        self.assertEqual(self.named("kafka_partition_latest_offset", "topic"), {"t2"})
        self.assertEqual(self.ready()[0], 200)
        self.poller.follow(member(BOTH, rebalances=3))
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), {"gb"})
        self.assertEqual(self.ready()[1]["clusters"]["c"]["sharding"]["collected"], False)
        self.clock.advance(10)
        self.assertEqual(self.source.reads[-1], BOTH)
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), {"ga", "gb"})
        self.assertEqual(self.ready()[0], 200)

    @pytest.mark.subprocess
    def test_the_sharding_series_pass_promtool(self) -> None:
        """promtool's only complaint is the documented abbreviated unit of poll_time_ms."""
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not installed")
        self.poller.follow(member(BOTH))
        self.clock.advance(10)
        rendered = self.renderer.current
        assert rendered is not None
        text = rendered.body(Variant(openmetrics=False, gzipped=False))
        self.assertIn(b"kafka_lag_exporter_rebalances_total", text)
        done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                              timeout=60)
        problems = [line for line in (done.stdout + done.stderr).decode().splitlines() if line]
        self.assertEqual([p for p in problems if not p.startswith("kafka_consumergroup_poll_time_ms ")],
                         [])

    def test_an_expired_session_drops_every_shard(self) -> None:
        """Lost coordinator: nothing of the cluster's groups is reported, health stays."""
        self.poller.follow(member(BOTH))
        self.clock.advance(10)
        self.poller.follow(Membership(MemberState.EXPIRED, no_shard(2), 1))
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), set())
        self.assertEqual(self.named("kafka_partition_latest_offset", "topic"), set())
        self.assertEqual(self.value("kafka_lag_exporter_up"), 1.0)
        status, answer = self.ready()
        self.assertEqual((status, answer["clusters"]["c"]["sharding"]["state"]), (503, "expired"))

    def test_a_cut_made_while_a_cycle_brought_more_keeps_the_newest(self) -> None:
        """The cut that ends last is of the newest snapshot and the shards owned now."""
        self.poller.follow(member(BOTH))
        self.clock.advance(10)
        self.poller.follow(member(SHARD0, 2))
        self.clock.advance(10)
        self.assertEqual(self.source.reads[-1], SHARD0)
        self.assertEqual(self.named("kafka_consumergroup_group_lag", "group"), {"gb"})
        self.assertEqual(self.named("kafka_partition_latest_offset", "topic"), {"t2"})


class FakeMemberIO:
    """MemberIO's stand-in: polls answer what the test queued; `deliver` is the listener's."""

    def __init__(self, cluster: Any, sharding: ShardingConfig,
                 deliver: Callable[[FrozenSet[int]], None]) -> None:
        self.deliver = deliver
        self.answers: List[Union[MemberPoll, Exception]] = []
        self.polls = 0
        self.stopping = self.closed = False

    def poll(self) -> MemberPoll:
        self.polls += 1
        answer = self.answers.pop(0) if self.answers else MemberPoll(1, None)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def stop_polling(self) -> None:
        self.stopping = True

    def close(self) -> None:
        assert self.stopping, "stop_polling() comes first"
        self.closed = True


SHARDING = ShardingConfig(ShardMode.KAFKA, shards=4, session_timeout=6.0)


class MemberTests(SynchronousTestCase):
    """A ShardMember on a Clock over a FakeMemberIO."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(T0)
        config = parse_config(CONFIG, "c.toml", "toml", {})
        self.heard: List[Membership] = []
        made: List[FakeMemberIO] = []

        def make(*args: Any) -> FakeMemberIO:
            made.append(FakeMemberIO(*args))
            return made[-1]

        self.member = ShardMember(config.clusters[0], SHARDING, self.clock, run_now,
                                  lambda f, *args: f(*args), make, lambda: 0.0)
        self.member.followers.append(self.heard.append)
        [self.io] = made

    def start(self) -> None:
        self.member.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.member.running:
            self.successResultOf(self.member.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_it_owns_what_it_is_assigned_once_the_coordinator_confirms_it(self) -> None:
        self.io.answers = [MemberPoll(-1, None), MemberPoll(1, 0.0)]
        self.start()  # first poll: not in the group yet
        self.assertEqual(self.member.membership, Membership(MemberState.JOINING, no_shard(4)))
        self.io.deliver(frozenset({1, 3}))  # the listener, during the next poll's join
        self.clock.advance(MEMBER_TICK)
        self.assertEqual(self.member.membership,
                         Membership(MemberState.MEMBER, Shards(4, frozenset({1, 3})), 1))
        self.assertEqual(self.heard[-1], self.member.membership)
        self.io.deliver(frozenset({1}))  # revoked: heard at once, no poll needed
        self.assertEqual(self.heard[-1].shards, Shards(4, frozenset({1})))

    def test_without_confirmation_it_drops_its_shards_when_the_session_would_expire(self) -> None:
        """Confirmed 0.5 s before a poll at T0: the shards go at T0 - 0.5 + 6 s, not before."""
        self.io.answers = [MemberPoll(2, 0.5)] + [MemberPoll(2, 0.5 + n) for n in range(1, 9)]
        self.io.deliver(frozenset({0, 2}))
        self.start()
        self.assertEqual(self.member.membership.state, MemberState.MEMBER)
        self.clock.pump([MEMBER_TICK] * 5 + [0.45])  # a poll a second, the last at T0 + 5
        self.assertEqual(self.io.polls, 6)
        self.assertEqual(self.member.membership.shards.owned, frozenset({0, 2}))
        self.clock.advance(0.1)
        self.assertEqual(self.member.membership, Membership(MemberState.EXPIRED, no_shard(4), 1))
        # The coordinator answers again: the assignment it holds is its own again.
        self.io.answers = [MemberPoll(2, 0.2)]
        self.clock.advance(MEMBER_TICK)
        self.assertEqual(self.member.membership,
                         Membership(MemberState.MEMBER, Shards(4, frozenset({0, 2})), 1))

    def test_rebalances_count_the_generations_it_went_through(self) -> None:
        self.io.answers = [MemberPoll(-1, None), MemberPoll(3, 0.0), MemberPoll(5, 0.0),
                           MemberPoll(-1, 0.0), MemberPoll(9, 0.0)]
        self.start()
        counts = [self.member.membership.rebalances]
        for _ in range(4):
            self.clock.advance(MEMBER_TICK)
            counts.append(self.member.membership.rebalances)
        self.assertEqual(counts, [0, 1, 3, 3, 4])

    def test_a_failing_set_up_is_logged_once_per_reason_and_retried(self) -> None:
        lines: List[str] = []

        def observe(event: Dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("klag_collector.coordination"):
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        denied = CoordinationError("not authorized (TopicAuthorizationFailedError): ...")
        self.io.answers = [denied, denied, denied, MemberPoll(1, 0.0)]
        self.start()
        self.clock.advance(1.0)  # retry after 1 s
        self.clock.advance(2.0)  # then 2 s
        self.assertEqual(self.io.polls, 3)
        self.assertEqual(self.member.membership.error, str(denied))
        self.assertEqual(lines, [f"cluster c: {denied}; retrying"])
        self.clock.advance(4.0)
        self.assertEqual(self.member.membership.error, "")
        self.assertEqual(lines[-1], "cluster c: shard coordination set up")

    def test_the_stop_leaves_the_group(self) -> None:
        self.start()
        self.successResultOf(self.member.stopService())
        self.assertTrue(self.io.closed)


class _Reactor(task.Clock):
    """A Clock that runs calls "from threads" at once: enough to build a service."""

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        f(*args)


TWO = """
[exporter.sharding]
mode = "kafka"
{extra}
[[clusters]]
name = "a"
bootstrap_servers = "127.0.0.1:1"
[[clusters]]
name = "{second}"
bootstrap_servers = "127.0.0.1:2"
"""


def test_each_cluster_has_a_member_unless_one_hosts_them_all_and_reloads_follow() -> None:
    """Built, not started: a member per hosting cluster, each poller following its own; a
    reload that swaps cluster b for c retires b's member and gives c one, a's stays."""
    from klag_collector.service import make_service

    reactor = _Reactor()
    own = make_service(parse_config(TWO.format(extra="", second="b"), "s.toml", "toml", {}),
                       reactor, serve_http=False)
    members = dict(own._members)
    assert sorted(members) == ["a", "b"]
    pollers = {p.name: p for p in own._pollers}
    assert [f.__self__ for f in members["b"].followers] == [pollers["b"]]
    result = own.reload(parse_config(TWO.format(extra="", second="c"), "s.toml", "toml", {}))
    assert result.ok
    assert sorted(own._members) == ["a", "c"] and own._members["a"] is members["a"]
    assert [f.__self__ for f in own._members["c"].followers] == [own._pollers[1]]
    shared = make_service(parse_config(TWO.format(extra='coordination_cluster = "a"',
                                                  second="b"), "s.toml", "toml", {}),
                          reactor, serve_http=False)
    assert sorted(shared._members) == ["a"]
    assert [f.__self__.name for f in shared._members["a"].followers] == ["a", "b"]
