"""SASL and TLS on a real broker: every supported way in works, every wrong one says why.

One LocalBroker for the module carries a listener per case (SASL_PLAINTEXT with PLAIN and
SCRAM-SHA-256/512, SSL, SSL requiring client certificates, SASL_SSL, and SSL with a
certificate for another host name); the certificates are generated into a temp dir here.
Topics, records and commits go in through the broker's PLAINTEXT listener; the exporter
reads them through the secured ones, with its admin client and its timestamp consumer.

Two exporter processes, one with every working configuration and one with every broken one
(at debug level, where kafka-python logs its configuration and SASL bytes), keep the module
to one broker start and two exporter starts. The unit tests at the end need no broker.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ScramMechanism, UserScramCredentialUpsertion
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

from exporter import ExporterProcess, cluster_toml, config_toml, free_port, now_ms
from kafkahelp import commit, create_topic, produce
from klag_collector import kafka_clients, logs
from devtools.localkafka import Listener, LocalBroker
from tls import Certs, make_certs

USER = "klag-reader"
# Fresh per run, so a scan for them cannot be fooled by a fixed string elsewhere.
PASSWORD = f"pw-{secrets.token_hex(8)}"
WRONG_PASSWORD = f"wrong-{secrets.token_hex(8)}"
KEY_PASSWORD = f"key-{secrets.token_hex(8)}"
WRONG_KEY_PASSWORD = f"wrongkey-{secrets.token_hex(8)}"
PREFIX = f"klagsec-{secrets.token_hex(4)}"
TOPIC, GROUP = f"{PREFIX}-t", f"{PREFIX}-g"
RECORDS, COMMITTED = 10, 4
MECHANISMS = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"

LAG = "kafka_consumergroup_group_lag"
LAG_SECONDS = "kafka_consumergroup_group_lag_seconds"
UP = "kafka_lag_exporter_up"


@dataclass
class Secure:
    broker: LocalBroker
    certs: Certs

    def at(self, listener: str) -> str:
        return self.broker.listener_bootstrap(listener)


def _broker_properties(certs: Certs) -> Dict[str, str]:
    props: Dict[str, str] = {}

    def tls(listener: str, keystore: Path, client_auth: str = "none") -> None:
        p = f"listener.name.{listener}."
        props.update({
            p + "ssl.keystore.type": "PEM",
            p + "ssl.keystore.location": str(keystore),
            p + "ssl.truststore.type": "PEM",
            p + "ssl.truststore.location": str(certs.ca),
            p + "ssl.client.auth": client_auth,
        })

    def sasl(listener: str) -> None:
        p = f"listener.name.{listener}."
        props[p + "sasl.enabled.mechanisms"] = MECHANISMS
        props[p + "plain.sasl.jaas.config"] = f'{PLAIN_LOGIN} required user_{USER}="{PASSWORD}";'
        for mechanism in ("scram-sha-256", "scram-sha-512"):
            # SCRAM users live in the cluster metadata, added once the broker runs.
            props[p + f"{mechanism}.sasl.jaas.config"] = f"{SCRAM_LOGIN} required;"

    sasl("sasl_plaintext")
    sasl("sasl_ssl")
    tls("sasl_ssl", certs.broker_keystore)
    tls("ssl", certs.broker_keystore)
    tls("mtls", certs.broker_keystore, client_auth="required")
    tls("wronghost", certs.wrong_host_keystore)
    return props


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[Secure]:
    """The module's broker, with its secured listeners, SCRAM users, a topic and a committed group."""
    workdir = tmp_path_factory.mktemp("secure-kafka")
    certs = make_certs(workdir / "certs", KEY_PASSWORD)
    broker = LocalBroker(
        workdir / "broker",
        extra_properties=_broker_properties(certs),
        extra_listeners=["SASL_PLAINTEXT", "SSL", "SASL_SSL",
                         Listener("MTLS", "SSL"), Listener("WRONGHOST", "SSL")],
    )
    broker.start(timeout=120)
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000,
                                 client_id="klag-security-tests")
        try:
            # One mechanism per request: the broker refuses two changes of one user at once.
            for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
                result = admin.alter_user_scram_credentials(
                    [UserScramCredentialUpsertion(USER, mechanism, PASSWORD)])
                assert result == {USER: None}, result
            create_topic(admin, TOPIC, 1)
            produce(broker.bootstrap, TOPIC, 0, [now_ms() - 60_000 + i * 1000 for i in range(RECORDS)])
            commit(admin, GROUP, {TopicPartition(TOPIC, 0): COMMITTED})
        finally:
            admin.close()
        yield Secure(broker, certs)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka(secure):
    """These tests need only their own broker, not the session's (conftest starts it for kafka tests)."""
    return secure.broker


def _properties(**props: str) -> str:
    lines = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in props.items())
    return f"[clusters.consumer_properties]\n{lines}"


def _sasl(mechanism: str, password: str = PASSWORD, protocol: str = "SASL_PLAINTEXT", **more) -> str:
    return _properties(**{"security.protocol": protocol, "sasl.mechanism": mechanism,
                          "sasl.username": USER, "sasl.password": password}, **more)


def _working(s: Secure) -> Dict[str, tuple]:
    """cluster name -> (bootstrap, consumer_properties block), each a way in that must work."""
    ca = str(s.certs.ca)
    return {
        "sasl-plain": (s.at("SASL_PLAINTEXT"), _sasl("PLAIN")),
        "sasl-scram-256": (s.at("SASL_PLAINTEXT"), _sasl("SCRAM-SHA-256")),
        "sasl-scram-512": (s.at("SASL_PLAINTEXT"), _sasl("SCRAM-SHA-512")),
        "ssl": (s.at("SSL"), _properties(**{"security.protocol": "SSL", "ssl.ca.location": ca})),
        "mtls": (s.at("MTLS"), _properties(**{
            "security.protocol": "SSL", "ssl.ca.location": ca,
            "ssl.certificate.location": str(s.certs.client_cert),
            "ssl.key.location": str(s.certs.client_key), "ssl.key.password": KEY_PASSWORD})),
        "sasl-ssl": (s.at("SASL_SSL"), _sasl("SCRAM-SHA-512", protocol="SASL_SSL",
                                             **{"ssl.ca.location": ca})),
        "no-hostname-check": (s.at("WRONGHOST"), _properties(**{
            "security.protocol": "SSL", "ssl.ca.location": ca,
            "ssl.endpoint.identification.algorithm": ""})),
    }


def _broken(s: Secure) -> Dict[str, tuple]:
    """cluster name -> (bootstrap, consumer_properties block), each refused for a reason."""
    ca = str(s.certs.ca)
    return {
        "wrong-password": (s.at("SASL_PLAINTEXT"), _sasl("PLAIN", WRONG_PASSWORD)),
        "wrong-scram-password": (s.at("SASL_SSL"), _sasl("SCRAM-SHA-256", WRONG_PASSWORD,
                                                         "SASL_SSL", **{"ssl.ca.location": ca})),
        "untrusted": (s.at("SSL"), _properties(**{
            "security.protocol": "SSL", "ssl.ca.location": str(s.certs.other_ca)})),
        "hostname-check": (s.at("WRONGHOST"), _properties(**{
            "security.protocol": "SSL", "ssl.ca.location": ca})),
        "no-client-cert": (s.at("MTLS"), _properties(**{
            "security.protocol": "SSL", "ssl.ca.location": ca})),
        "wrong-key-password": (s.at("MTLS"), _properties(**{
            "security.protocol": "SSL", "ssl.ca.location": ca,
            "ssl.certificate.location": str(s.certs.client_cert),
            "ssl.key.location": str(s.certs.client_key), "ssl.key.password": WRONG_KEY_PASSWORD})),
    }


def _start(workdir: Path, clusters: Dict[str, tuple], args: Sequence[str] = ()) -> ExporterProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    text = "".join(cluster_toml(name, bootstrap, PREFIX, extra)
                   for name, (bootstrap, extra) in clusters.items())
    # "all": /ready fails while any cluster does, so a refused one shows there.
    return ExporterProcess(workdir, config_toml(port, text, 'ready_requires = "all"'), port, args)


@pytest.fixture(scope="module")
def working(secure, tmp_path_factory) -> Iterator[tuple]:
    """One exporter with every working configuration, once all report lag: (exporter, samples)."""
    clusters = _working(secure)
    exporter = _start(tmp_path_factory.mktemp("working"), clusters)
    try:
        samples = exporter.wait_for(
            lambda s: all(s.get(LAG_SECONDS, cluster_name=n, group=GROUP) is not None
                          for n in clusters),
            timeout=60, what="lag and time lag from every secured cluster")
        yield exporter, samples
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def broken(secure, tmp_path_factory) -> Iterator[tuple]:
    """One exporter (debug logging) with every broken configuration and one good PLAIN cluster.

    Yields (exporter, samples, /ready document) once each broken cluster failed twice.
    """
    clusters = {**_broken(secure), "good-plain": _working(secure)["sasl-plain"],
                "good-mtls": _working(secure)["mtls"]}
    # At log level debug kafka-python logs its config and SASL bytes: the secrets must not show.
    exporter = _start(tmp_path_factory.mktemp("broken"), clusters, ["-l", "debug"])
    failures = "kafka_lag_exporter_cycle_failures_total"
    try:
        samples = exporter.wait_for(
            lambda s: all((s.get(failures, cluster_name=n) or 0) >= 2 for n in _broken(secure))
            and s.get(LAG, cluster_name="good-plain", group=GROUP) is not None,
            timeout=60, what="two failed cycles of every broken cluster")
        status, _, body = exporter.get("/ready")
        assert status == 503, body
        yield exporter, samples, json.loads(body)
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]


# -- every supported way in ------------------------------------------------------------

WORKING = ["sasl-plain", "sasl-scram-256", "sasl-scram-512", "ssl", "mtls", "sasl-ssl",
           "no-hostname-check"]


@pytest.mark.broker
@pytest.mark.parametrize("name", WORKING)
def test_secured_cluster_reports_lag(working, name):
    """up 1, the committed group's exact lag, and a time lag (read by the sampling consumer)."""
    exporter, s = working
    assert s.get(UP, cluster_name=name) == 1
    ids = dict(cluster_name=name, group=GROUP, topic=TOPIC, partition="0")
    assert s.get("kafka_consumergroup_group_offset", **ids) == COMMITTED
    assert s.get("kafka_partition_latest_offset", cluster_name=name, topic=TOPIC, partition="0") == RECORDS
    assert s.get(LAG, **ids) == RECORDS - COMMITTED
    # The committed offset's record was stamped 56 s before the fixture ran.
    assert 50 < s.get(LAG_SECONDS, **ids) < 300
    status, _, body = exporter.get("/ready")
    assert status == 200
    assert json.loads(body)["clusters"][name]["state"] == "ok"


# -- every refused way in ----------------------------------------------------------------

# cluster -> what its log line and /ready must say (a regex, case-insensitive).
REASONS = {
    "wrong-password": r"authentication",
    "wrong-scram-password": r"authentication",
    "untrusted": r"certificate verify failed.*not signed by a CA in ssl\.ca\.location",
    "hostname-check": r"certificate verify failed.*does not name the host",
    "no-client-cert": r"refused the client's TLS certificate",
    "wrong-key-password": r"cannot load the client certificate and key.*ssl\.key\.password",
}


@pytest.mark.broker
@pytest.mark.parametrize("name", sorted(REASONS))
def test_refused_cluster_is_down_and_says_why(broken, name):
    """up 0, no lag series, /ready failing with the reason, and one log line naming it."""
    exporter, s, ready = broken
    assert s.get(UP, cluster_name=name) == 0
    assert not s.find(LAG, cluster_name=name)
    cluster = ready["clusters"][name]
    assert cluster["state"] == "failing"
    assert re.search(REASONS[name], cluster["last_error"], re.I), cluster["last_error"]
    if name in ("wrong-password", "wrong-scram-password"):
        assert "failed" in cluster["last_error"] and f'"{USER}"' in cluster["last_error"] \
            or f"sasl.username ({USER})" in cluster["last_error"], cluster["last_error"]
    lines = [json.loads(line) for line in exporter.log.read_text().splitlines()
             if line.startswith("{")]
    ours = [r["message"] for r in lines
            if r["logger"].startswith("klag_collector") and f"cluster {name}:" in r["message"]]
    assert any(re.search(REASONS[name], m, re.I) for m in ours), ours[-3:]


@pytest.mark.broker
def test_a_refused_cluster_does_not_stop_a_good_one(broken):
    """Next to the broken clusters, in the same process, the good ones report lag."""
    _, s, ready = broken
    for name in ("good-plain", "good-mtls"):
        assert s.get(UP, cluster_name=name) == 1
        assert s.get(LAG, cluster_name=name, group=GROUP, topic=TOPIC, partition="0") == \
            RECORDS - COMMITTED
        assert ready["clusters"][name]["state"] == "ok"


@pytest.mark.broker
def test_secrets_never_appear(broken):
    """At debug level, no SASL password or key password, right or wrong, is printed."""
    exporter, _, _ = broken
    served = {path: exporter.get(path)[2].decode() for path in ("/ready", "/", "/metrics")}
    log = exporter.log.read_text()
    # The debug log did carry what would leak: kafka-python's config dump and SASL bytes.
    assert "sasl_plain_password" in log and "SaslAuthenticateRequest" in log
    for secret in (PASSWORD, WRONG_PASSWORD, KEY_PASSWORD, WRONG_KEY_PASSWORD):
        assert secret not in log
        for path, text in served.items():
            assert secret not in text, path


# -- unit tests: no broker ----------------------------------------------------------------

def _sasl_args(**more):
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "alice", "sasl_plain_password": "s3cret-pw", **more}


def test_explain_sasl_failure():
    error = SaslAuthenticationFailedError(
        "SaslAuthenticationFailedError: Authentication failed: Invalid username or password")
    assert kafka_clients.explain([KafkaConnectionError("socket disconnected"), error], _sasl_args()) == (
        'SASL PLAIN authentication as "alice" failed: Authentication failed: Invalid username or password')


def test_explain_sasl_disconnect():
    """kafka-python loses the broker's answer when the socket closes right after it."""
    reason = kafka_clients.explain([KafkaConnectionError("socket disconnected")], _sasl_args())
    assert reason is not None and "failed SASL authentication" in reason
    assert "sasl.username (alice)" in reason and "(PLAIN)" in reason
    # Without SASL a closed connection is not a credentials problem: left to the caller.
    assert kafka_clients.explain([KafkaConnectionError("socket disconnected")], {}) is None


@pytest.mark.parametrize("text, expected", [
    ("Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate in certificate chain (_ssl.c:1006)",
     "TLS handshake failed (certificate verify failed: self-signed certificate in certificate "
     "chain): the broker's certificate is not signed by a CA in ssl.ca.location"),
    ("Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "IP address mismatch, certificate is not valid for '127.0.0.1'. (_ssl.c:1006)",
     "(certificate verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'): "
     "the broker's certificate does not name the host in bootstrap_servers"),
    ("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)",
     "the broker refused the client's TLS certificate ([SSL: SSLV3_ALERT_BAD_CERTIFICATE] "
     "sslv3 alert bad certificate)"),
    ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)",
     "the broker refused the client's TLS certificate"),
])
def test_explain_tls_failures(text, expected):
    reason = kafka_clients.explain([KafkaConnectionError(text)], {"security_protocol": "SSL"})
    assert reason is not None and expected in reason


def test_explain_unreadable_client_key():
    """A wrong ssl.key.password fails in OpenSSL ("PEM lib"), raised as ssl.SSLError."""
    error = ssl.SSLError(9, "[SSL] PEM lib (_ssl.c:3926)")
    reason = kafka_clients.explain([error], {"security_protocol": "SSL"})
    assert reason is not None and reason.startswith(
        "cannot load the client certificate and key ([SSL] PEM lib): is ssl.key.password right")


def test_explain_leaves_other_failures_alone():
    timeout = KafkaTimeoutError("Timeout during ApiVersions check")
    assert kafka_clients.explain([timeout], {"security_protocol": "SSL"}) is None
    assert kafka_clients.explain([], _sasl_args()) is None


def _io_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kafka-io-")]


def test_failed_bootstrap_leaves_no_io_thread():
    """kafka-python leaves a failed constructor's IO thread running; build() stops it."""
    before = len(_io_threads())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    for _ in range(3):
        with pytest.raises(KafkaTimeoutError):  # not a security problem: the client's own error
            kafka_clients.build(KafkaAdminClient, {"bootstrap_servers": [dead],
                                                   "bootstrap_timeout_ms": 300})
    deadline = time.monotonic() + 5
    while len(_io_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_io_threads()) == before


def test_build_reports_the_recorded_cause():
    """Connection errors logged on the client's IO thread become a ConnectError naming them."""
    error = SaslAuthenticationFailedError("SaslAuthenticationFailedError: Authentication failed: nope")

    class Failing:
        def __init__(self, **args):
            self._net = type("Net", (), {"_io_thread": threading.current_thread(),
                                         "stop": lambda self: None})()
            logging.getLogger("kafka.net.connection").error("%s: Connection lost: %s", "conn", error)
            raise KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']")

    with pytest.raises(kafka_clients.ConnectError) as raised:
        kafka_clients.build(Failing, {**_sasl_args(), "bootstrap_servers": ["127.0.0.1:1"]})
    assert str(raised.value) == ('cannot connect to 127.0.0.1:1: SASL PLAIN authentication as '
                                 '"alice" failed: Authentication failed: nope')


def test_redact_masks_registered_secrets_in_every_form():
    logs.hide_secrets("p'w\\x-Unit")
    config_dump = repr({"sasl_plain_password": "p'w\\x-Unit"})
    auth_bytes = repr(b"alice\x00alice\x00" + "p'w\\x-Unit".encode())
    for text in (config_dump, auth_bytes, "plain p'w\\x-Unit"):
        assert "x-Unit" not in logs.redact(text), text
        assert "***" in logs.redact(text)
