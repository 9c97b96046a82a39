"""Sharded replicas on a real broker: three exporter processes share 300 groups through a
Kafka coordination group, and together report what one unsharded exporter reports.

The fleet (three kafka-mode replicas and one unsharded reference) is started once for the
module; the last test kills a replica with SIGKILL and starts it again. "Own" series are
those with a group or topic label: each must come from exactly one replica. The cluster-wide
counts (data loss, skipped, ...) are each replica's share: they sum to the reference's.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import json

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from exporter import ExporterProcess, Samples, free_port
from kafkahelp import commit, create_topic, produce, wait_until
from klag_collector import metrics
from klag_collector.coordination_io import TOPIC_CONFIGS

pytestmark = pytest.mark.broker

GROUPS, TOPICS, PARTITIONS, RECORDS = 300, 12, 4, 6
SHARDS = 16
SESSION = 6.0  # the broker's group.min.session.timeout.ms
POLL = 1.0
HEARTBEAT = SESSION / 5  # coordination_io: a fifth of the session

OWN = frozenset(d.name for d in metrics.LAG_FAMILIES
                if {metrics.GROUP, metrics.TOPIC} & set(d.labels))
TOTALS = frozenset(d.name for d in metrics.LAG_FAMILIES if d.name not in OWN)
# Time lags move with the clock of the replica that computed them.
SECONDS = frozenset({metrics.GROUP_LAG_SECONDS.name, metrics.GROUP_MAX_LAG_SECONDS.name})

Key = Tuple[str, FrozenSet[Tuple[str, str]]]


class Names:
    """The module's topics, groups and coordination names: no other test's."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.prefix = f"klagshard-{tag}"
        self.group = f"klagcoord-{tag}"
        self.topic = f"__klagcoord-{tag}"

    def topics(self) -> List[str]:
        return [f"{self.prefix}-t{i:02d}" for i in range(TOPICS)]

    def groups(self) -> List[str]:
        return [f"{self.prefix}-g{i:03d}" for i in range(GROUPS)]


def config(port: int, bootstrap: str, names: Names, sharding: str) -> str:
    return f"""
[exporter]
poll_interval = "{POLL:g}s"
http_host = "127.0.0.1"
http_port = {port}
granularity = "partition"
{sharding}
[exporter.timestamp_sampling]
cache_ttl = "30s"
[exporter.performance]
kafka_timeout = "5s"
[[clusters]]
name = "it"
bootstrap_servers = "{bootstrap}"
group_whitelist = ["^{names.prefix}"]
topic_whitelist = ["^{names.prefix}"]
"""


def kafka_mode(names: Names, shards: int = SHARDS) -> str:
    return f"""[exporter.sharding]
mode = "kafka"
shards = {shards}
session_timeout = "{SESSION:g}s"
coordination_group = "{names.group}"
coordination_topic = "{names.topic}"
"""


class Fleet:
    """The exporter processes of the module, each in a directory of its own."""

    def __init__(self, factory: pytest.TempPathFactory, bootstrap: str, names: Names) -> None:
        self.factory, self.bootstrap, self.names = factory, bootstrap, names
        self.procs: List[ExporterProcess] = []

    def start(self, sharding: str, port: Optional[int] = None) -> ExporterProcess:
        port = port or free_port()
        proc = ExporterProcess(self.factory.mktemp("replica"),
                               config(port, self.bootstrap, self.names, sharding), port)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture(scope="module")
def names() -> Names:
    return Names()


@pytest.fixture(scope="module")
def seeded(kafka, names: Names) -> Names:
    """12 topics of 4 partitions, 6 records each; group i at offset (i + p) % 7 of every
    partition of topic i % 12 (6 is the log end: lag 0)."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=30000)
    try:
        for topic in names.topics():
            create_topic(admin, topic, PARTITIONS)
        now_ms = int(time.time() * 1000)
        for topic in names.topics():
            for p in range(PARTITIONS):
                produce(kafka.bootstrap, topic, p, [now_ms - (RECORDS - r) * 60_000
                                                    for r in range(RECORDS)])

        def seed(i: int) -> None:
            topic = names.topics()[i % TOPICS]
            commit(admin, names.groups()[i],
                   {TopicPartition(topic, p): (i + p) % (RECORDS + 1) for p in range(PARTITIONS)})

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(seed, range(GROUPS)))
    finally:
        admin.close()
    return names


def ready(proc: ExporterProcess) -> Optional[dict]:
    """/ready's cluster entry when it answers 200, else None."""
    assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
    try:
        status, _, body = proc.get("/ready")
    except OSError:
        return None
    return json.loads(body)["clusters"]["it"] if status == 200 else None


def owned(procs: List[ExporterProcess]) -> Optional[List[List[int]]]:
    """Each replica's shards once every one is ready and, together, they own every shard once."""
    entries = [ready(p) for p in procs]
    if not all(entries):
        return None
    shards = [e["sharding"]["owned"] for e in entries if e]
    together = sorted(s for own in shards for s in own)
    return shards if together == list(range(SHARDS)) else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, kafka, seeded: Names) -> Iterator[Tuple[Fleet, List[ExporterProcess],
                                                                     ExporterProcess]]:
    """Three kafka-mode replicas, every shard owned and collected, and the unsharded one."""
    fleet = Fleet(tmp_path_factory, kafka.bootstrap, seeded)
    try:
        reference = fleet.start("")
        replicas = [fleet.start(kafka_mode(seeded)) for _ in range(3)]
        wait_until(lambda: owned(replicas), timeout=60, what="three replicas owning every shard")
        wait_until(lambda: ready(reference), timeout=30, what="the unsharded exporter")
        yield fleet, replicas, reference
    finally:
        fleet.stop()


def split(samples: Samples) -> Tuple[Dict[Key, float], Dict[Key, float]]:
    """(own series, cluster-wide counts) of one scrape."""
    own = {k: v for k, v in samples.values.items() if k[0] in OWN}
    totals = {k: v for k, v in samples.values.items() if k[0] in TOTALS}
    return own, totals


def union_of(scrapes: List[Samples]) -> Tuple[Dict[Key, float], Dict[Key, float]]:
    """The replicas' own series together (none may come twice), and their counts summed."""
    own: Dict[Key, float] = {}
    totals: Dict[Key, float] = {}
    for samples in scrapes:
        mine, counts = split(samples)
        twice = set(mine) & set(own)
        assert not twice, f"reported by two replicas: {sorted(twice)[:5]}"
        own.update(mine)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0.0) + value
    return own, totals


def assert_same(union: Dict[Key, float], whole: Dict[Key, float]) -> None:
    assert set(union) == set(whole), (sorted(set(union) ^ set(whole))[:5])
    for key, value in whole.items():
        if key[0] in SECONDS:
            assert union[key] == pytest.approx(value, abs=5), key
        else:
            assert union[key] == value, key


def groups_in(samples: Samples) -> int:
    return len(samples.find(metrics.GROUP_STATE.name))


def rendered(procs: List[ExporterProcess], reference: ExporterProcess
             ) -> Tuple[List[Samples], Samples]:
    """Scrapes of the replicas and the reference once the replicas' /metrics hold the same
    series as the reference's (/ready turns 200 a render pass before /metrics has the cycle),
    checking at every scrape that no series comes from two replicas."""
    def attempt() -> Optional[Tuple[List[Samples], Samples]]:
        scrapes, whole = [p.scrape() for p in procs], reference.scrape()
        own, _ = union_of(scrapes)
        return (scrapes, whole) if set(own) == set(split(whole)[0]) else None

    return wait_until(attempt, timeout=10, interval=0.2, what="the replicas' series")


def test_three_replicas_report_together_what_one_unsharded_reports(fleet, admin, seeded) -> None:
    """Series for series and value for value, none twice; each replica read only its share."""
    _, replicas, reference = fleet
    scrapes, whole = rendered(replicas, reference)
    own, totals = union_of(scrapes)
    whole_own, whole_totals = split(whole)
    assert groups_in(whole) == GROUPS
    assert len(whole.find(metrics.PARTITION_LATEST_OFFSET.name)) == TOPICS * PARTITIONS
    assert_same(own, whole_own)
    assert totals == whole_totals
    # The work is shared: each replica described and reported about a third of the groups.
    shares = [groups_in(s) for s in scrapes]
    assert sum(shares) == GROUPS and all(60 <= share <= 140 for share in shares), shares
    owned_series = [s.get(metrics.SHARDS_OWNED.name, cluster_name="it") for s in scrapes]
    assert sum(owned_series) == SHARDS and all(n >= 4 for n in owned_series), owned_series
    assert all(s.get(metrics.REBALANCES.name, cluster_name="it") >= 1 for s in scrapes)
    # The coordination topic was made: a partition per shard, one replica, compacted.
    [topic] = admin.describe_topics([seeded.topic])
    assert len(topic["partitions"]) == SHARDS
    assert {len(p["replica_nodes"]) for p in topic["partitions"]} == {1}
    resource = ConfigResource(ConfigResourceType.TOPIC, seeded.topic, dict.fromkeys(TOPIC_CONFIGS))
    found = admin.describe_configs([resource], config_filter="all")["topic"][seeded.topic]
    assert {k: found[k]["value"] for k in TOPIC_CONFIGS} == TOPIC_CONFIGS


def test_static_halves_together_are_the_whole(fleet) -> None:
    """shard = "0/2" and "1/2": the same hash, no coordination; together what one reports."""
    fleet_, _, reference = fleet
    halves = [fleet_.start(f'[exporter.sharding]\nmode = "static"\nshard = "{i}/2"\n')
              for i in range(2)]
    wait_until(lambda: all(ready(h) for h in halves), timeout=30, what="both static halves")
    entries = [ready(h) for h in halves]
    assert [e["sharding"] for e in entries if e] == [
        {"state": "static", "shards": 2, "owned": [i], "collected": True, "rebalances": 0,
         "error": ""} for i in range(2)]
    scrapes, whole = rendered(halves, reference)
    own, totals = union_of(scrapes)
    whole_own, whole_totals = split(whole)
    assert_same(own, whole_own)
    assert totals == whole_totals
    for half in halves:
        assert half.stop() == 0


def scrape_if_up(proc: ExporterProcess) -> Samples:
    """Its /metrics, or no series while it does not listen yet (or no longer)."""
    try:
        return proc.scrape()
    except OSError:
        return Samples("")


def distinct_while(replicas: List[ExporterProcess], until, timeout: float, what: str) -> float:
    """Scrape the replicas every 0.2 s, checking that no own series comes from two of them,
    until until() holds; returns the seconds that took."""
    started = time.monotonic()
    while True:
        union_of([scrape_if_up(p) for p in replicas])
        if until():
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"timed out after {timeout}s: {what}"
        time.sleep(0.2)


def test_a_killed_replicas_shards_move_to_the_others_and_spread_back(fleet) -> None:
    """SIGKILL: the others own its shards within the session timeout and a poll (and the
    heartbeat that tells them of the rebalance), nothing reported twice meanwhile; started
    again, it gets its share back."""
    fleet_, replicas, reference = fleet
    victim, survivors = replicas[0], replicas[1:]
    victim.proc.kill()
    victim.proc.wait()
    took = distinct_while(survivors, lambda: owned(survivors), SESSION + POLL + HEARTBEAT + 5,
                          "the survivors owning every shard")
    print(f"the survivors own and collected every shard {took:.1f}s after the kill")
    assert took <= SESSION + POLL + HEARTBEAT + 2, took
    scrapes, whole = rendered(survivors, reference)
    assert_same(union_of(scrapes)[0], split(whole)[0])
    back = fleet_.start(kafka_mode(fleet_.names), port=victim.port)
    everyone = [back] + survivors

    def back_owns_some() -> bool:
        shares = owned(everyone)
        return bool(shares and shares[0])

    distinct_while(everyone, back_owns_some, 30, "the restarted replica owning shards again")
    shares = owned(everyone)
    assert shares is not None and sorted(len(s) for s in shares) == [5, 5, 6], shares
    scrapes, whole = rendered(everyone, reference)
    assert_same(union_of(scrapes)[0], split(whole)[0])


def test_a_coordination_topic_of_another_size_is_one_clear_line(tmp_path_factory, kafka,
                                                                 admin, seeded) -> None:
    """A topic already there with 3 partitions and shards = 4: nothing is owned, and /ready and
    the log say why in one line."""
    other = Names()
    create_topic(admin, other.topic, 3)
    fleet = Fleet(tmp_path_factory, kafka.bootstrap, seeded)
    try:
        proc = fleet.start(kafka_mode(other, shards=4))
        line = (f'coordination topic "{other.topic}" has 3 partitions but '
                "exporter.sharding.shards is 4: set shards to its partition count, or delete "
                "the topic to have it made again")

        def error() -> Optional[str]:
            try:
                status, _, body = proc.get("/ready")
            except OSError:  # not listening yet
                return None
            entry = json.loads(body)["clusters"]["it"]["sharding"]
            return entry["error"] if status == 503 and entry["owned"] == [] else None

        assert wait_until(error, timeout=30, what="the error in /ready") == line
        messages = [json.loads(entry)["message"] for entry in proc.log.read_text().splitlines()]
        assert [m for m in messages if line in m] == [f"cluster it: {line}; retrying"]
    finally:
        fleet.stop()
