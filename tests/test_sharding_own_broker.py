"""A sharded replica on a broker of the module's own: the coordination's ACLs, and the
coordinator lost.

Without the ACLs the coordination is one clear line; with exactly the ones the README lists
the replica owns its shards. A replica whose coordinator stops answering keeps serving its
shards until its session would have expired, then drops them, and takes them up again when
the broker is back.

The broker runs Kafka's StandardAuthorizer, a PLAINTEXT listener (whose ANONYMOUS user is a
super user: the test's clients, and the outage test's exporter) and a SASL_PLAINTEXT one where
the ACL test's exporter signs in as a user allowed only what monitoring needs, then also what
the coordination needs. It is stopped and started again, so it cannot be the session's.
"""

from __future__ import annotations

import json
import time
from typing import Iterator, Optional

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import (
    ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType,
)

from devtools.localkafka import LocalBroker
from exporter import ExporterProcess, free_port
from exporter import now_ms
from kafkahelp import commit, create_topic, produce, wait_until

pytestmark = pytest.mark.broker

USER, PASSWORD = "klag", "klag-acl-secret"
PREFIX = "klagacl-"
GROUP, TOPIC = "klagacl-g", "klagacl-t"
COORDINATION_GROUP, COORDINATION_TOPIC = "klagcoord-acl", "__klagcoord-acl"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[LocalBroker]:
    """The authorizing broker, with a topic, a group, and the monitoring ACLs of USER."""
    listener = "listener.name.sasl_plaintext."
    broker = LocalBroker(
        tmp_path_factory.mktemp("acl-kafka"),
        extra_properties={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            listener + "sasl.enabled.mechanisms": "PLAIN",
            listener + "plain.sasl.jaas.config":
                f'{PLAIN_LOGIN} required user_{USER}="{PASSWORD}";',
        },
        extra_listeners=["SASL_PLAINTEXT"],
    )
    broker.start(timeout=120)
    try:
        with admin_of(broker) as admin:
            create_topic(admin, TOPIC, 2)
            produce(broker.bootstrap, TOPIC, 0, [now_ms() - 3_000, now_ms() - 2_000, now_ms()])
            commit(admin, GROUP, {TopicPartition(TOPIC, 0): 1, TopicPartition(TOPIC, 1): 0})
            allow(admin, (ResourceType.CLUSTER, "kafka-cluster", ACLOperation.DESCRIBE, False),
                  (ResourceType.TOPIC, PREFIX, ACLOperation.ALL, True),
                  (ResourceType.GROUP, PREFIX, ACLOperation.ALL, True))
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka(secured):
    """Only this module's broker: not the session's (conftest starts it for broker tests)."""
    return secured


class admin_of:
    """A super user's admin client on the broker's PLAINTEXT listener."""

    def __init__(self, broker: LocalBroker) -> None:
        self.client = KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                                       request_timeout_ms=15000, client_id="klag-acl-tests")

    def __enter__(self) -> KafkaAdminClient:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def allow(admin: KafkaAdminClient, *grants) -> None:
    """Allow USER each (resource type, name, operation, whether the name is a prefix)."""
    acls = [ACL(f"User:{USER}", "*", operation, ACLPermissionType.ALLOW,
                ResourcePattern(kind, name, ACLResourcePatternType.PREFIXED if prefixed
                                else ACLResourcePatternType.LITERAL))
            for kind, name, operation, prefixed in grants]
    result = admin.create_acls(acls)
    assert not result["failed"], result


def test_the_coordination_says_which_acls_it_lacks_and_works_once_granted(
        tmp_path, secured: LocalBroker) -> None:
    port = free_port()
    proc = ExporterProcess(tmp_path, f"""
[exporter]
poll_interval = "1s"
http_host = "127.0.0.1"
http_port = {port}
[exporter.sharding]
mode = "kafka"
shards = 4
session_timeout = "6s"
coordination_group = "{COORDINATION_GROUP}"
coordination_topic = "{COORDINATION_TOPIC}"
[[clusters]]
name = "acl"
bootstrap_servers = "{secured.listener_bootstrap("SASL_PLAINTEXT")}"
group_whitelist = ["^{PREFIX}"]
topic_whitelist = ["^{PREFIX}"]
[clusters.consumer_properties]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "{USER}"
"sasl.password" = "{PASSWORD}"
""", port)
    try:
        line = (f"not authorized (TopicAuthorizationFailedError): the shard coordination needs "
                f'Create and Describe on topic "{COORDINATION_TOPIC}" and Read on group '
                f'"{COORDINATION_GROUP}" (see the README, "Scaling out")')

        def sharding() -> Optional[dict]:
            try:
                status, _, body = proc.get("/ready")
            except OSError:
                return None
            return {"status": status, **json.loads(body)["clusters"]["acl"]["sharding"]}

        found = wait_until(lambda: (s := sharding()) and s["error"] and s, timeout=60,
                           what="the coordination's error")
        assert (found["status"], found["state"], found["owned"], found["error"]) == (
            503, "joining", [], line)
        messages = [json.loads(entry)["message"] for entry in proc.log.read_text().splitlines()]
        assert [m for m in messages if "not authorized" in m] == [f"cluster acl: {line}; retrying"]
        with admin_of(secured) as admin:
            allow(admin, (ResourceType.TOPIC, COORDINATION_TOPIC, ACLOperation.CREATE, False),
                  (ResourceType.TOPIC, COORDINATION_TOPIC, ACLOperation.DESCRIBE, False),
                  (ResourceType.GROUP, COORDINATION_GROUP, ACLOperation.READ, False))
        owned = wait_until(lambda: (s := sharding()) and s["status"] == 200 and s, timeout=60,
                           what="the replica owning its shards once granted the ACLs")
        assert (owned["state"], owned["owned"], owned["error"]) == ("member", [0, 1, 2, 3], "")
        samples = proc.scrape()
        assert samples.get("kafka_consumergroup_group_sum_lag", group=GROUP) == 2.0 + 0.0
        with admin_of(secured) as admin:
            [topic] = admin.describe_topics([COORDINATION_TOPIC])
            assert len(topic["partitions"]) == 4
    finally:
        assert proc.stop() == 0


SESSION = 6.0
HEARTBEAT = SESSION / 5  # coordination_io: a fifth of the session


def test_a_replica_without_its_coordinator_drops_its_shards_when_its_session_would_expire(
        tmp_path, secured: LocalBroker) -> None:
    """Broker stopped: the lag series stay while the session might last (the data is fresh
    for a minute), go when it would have expired, and come back with the broker."""
    port = free_port()
    proc = ExporterProcess(tmp_path, f"""
[exporter]
poll_interval = "1s"
staleness_threshold = "60s"
http_host = "127.0.0.1"
http_port = {port}
[exporter.sharding]
mode = "kafka"
shards = 4
session_timeout = "{SESSION:g}s"
coordination_group = "klagcoord-outage"
coordination_topic = "__klagcoord-outage"
[[clusters]]
name = "acl"
bootstrap_servers = "{secured.bootstrap}"
group_whitelist = ["^{PREFIX}"]
topic_whitelist = ["^{PREFIX}"]
""", port)

    def state() -> str:
        """The replica's sharding state, "ready" when /ready is 200."""
        status, _, body = proc.get("/ready")
        entry = json.loads(body)["clusters"]["acl"]["sharding"]
        return "ready" if status == 200 else entry["state"]

    def lag() -> Optional[float]:
        return proc.scrape().get("kafka_consumergroup_group_sum_lag", group=GROUP)

    try:
        proc.wait_for(lambda s: s.get("kafka_consumergroup_group_sum_lag", group=GROUP) == 2.0,
                      timeout=60, what="the group's lag")
        wait_until(lambda: state() == "ready", timeout=30, what="the replica ready")
        stopping = time.monotonic()
        secured.stop()
        stopped = time.monotonic()
        # The last confirmation came a heartbeat or so before the stop began (two, should one
        # be late): until the session would expire, the replica stays a member serving its
        # shards (its data is fresh for a minute).
        time.sleep(max(0.0, stopping + SESSION - 2 * HEARTBEAT - 0.6 - time.monotonic()))
        assert (state(), lag()) == ("ready", 2.0)
        wait_until(lambda: state() == "expired", timeout=SESSION + 5, interval=0.1,
                   what="the shards dropped")
        took = time.monotonic() - stopping
        print(f"the shards were dropped {took:.1f}s after the broker began to stop "
              f"(it took {stopped - stopping:.1f}s to stop)")
        assert SESSION - 2 * HEARTBEAT <= took <= stopped - stopping + SESSION + 1.0, took
        assert lag() is None
        assert proc.scrape().get("kafka_lag_exporter_shards_owned", cluster_name="acl") == 0
        secured.start(timeout=120)
        wait_until(lambda: state() == "ready", timeout=90, what="the shards back")
        assert lag() == 2.0
    finally:
        assert proc.stop() == 0
