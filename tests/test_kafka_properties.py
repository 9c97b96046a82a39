"""Translating librdkafka / Java client properties into kafka-python arguments."""

from __future__ import annotations

import importlib.util

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from klag_collector import kafka_properties
from klag_collector.errors import ConfigError
from klag_collector.kafka_properties import (
    IGNORED,
    SECRET_ARGS,
    SECRET_PROPERTIES,
    TRANSLATED,
    UNSUPPORTED,
    hide_secrets,
    msk_iam_args,
    translate,
)

PREFIX = "clusters[0].consumer_properties"
SASL_SSL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "u",
    "sasl.password": "p",
}
SASL_SSL_ARGS = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "PLAIN",
    "sasl_plain_username": "u",
    "sasl_plain_password": "p",
}


def run(properties: dict) -> dict:
    return translate(properties, "test.toml", PREFIX)


def error_of(properties: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        run(properties)
    return info.value


def test_every_keyword_is_accepted_by_admin_client_and_consumer() -> None:
    """Each translated keyword is a real kafka-python 3 argument of both client classes."""
    for name, rule in TRANSLATED.items():
        if rule.arg is not None:
            assert rule.arg in KafkaAdminClient.DEFAULT_CONFIG, name
            assert rule.arg in KafkaConsumer.DEFAULT_CONFIG, name


def test_the_three_sets_do_not_overlap() -> None:
    """A property is translated, ignored or unsupported: never two of these."""
    assert not set(TRANSLATED) & set(IGNORED)
    assert not set(TRANSLATED) & set(UNSUPPORTED)
    assert not set(IGNORED) & set(UNSUPPORTED)


@pytest.mark.parametrize(
    "properties, expected",
    [
        ({"security.protocol": "ssl"}, {"security_protocol": "SSL"}),
        ({"security.protocol": "PLAINTEXT"}, {"security_protocol": "PLAINTEXT"}),
        (SASL_SSL, SASL_SSL_ARGS),
        (
            {**SASL_SSL, "sasl.mechanism": "scram-sha-256"},
            {**SASL_SSL_ARGS, "sasl_mechanism": "SCRAM-SHA-256"},
        ),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
          "sasl.username": "u", "sasl.password": "p"},
         {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
          "sasl_plain_username": "u", "sasl_plain_password": "p"}),
        (
            {
                "security.protocol": "SSL",
                "ssl.ca.location": "/ca.pem",
                "ssl.certificate.location": "/c.pem",
                "ssl.key.location": "/k.pem",
                "ssl.key.password": "kp",
                "ssl.crl.location": "/crl.pem",
            },
            {
                "security_protocol": "SSL",
                "ssl_cafile": "/ca.pem",
                "ssl_certfile": "/c.pem",
                "ssl_keyfile": "/k.pem",
                "ssl_password": "kp",
                "ssl_crlfile": "/crl.pem",
            },
        ),
        ({"client.id": "klag"}, {"client_id": "klag"}),
        ({"client.dns.lookup": "resolve_canonical_bootstrap_servers_only"},
         {"client_dns_lookup": "resolve_canonical_bootstrap_servers_only"}),
        ({"request.timeout.ms": "15000"}, {"request_timeout_ms": 15000}),
        ({"socket.timeout.ms": "20000"}, {"request_timeout_ms": 20000}),
        ({"metadata.max.age.ms": "60000"}, {"metadata_max_age_ms": 60000}),
        ({"reconnect.backoff.ms": "100"}, {"reconnect_backoff_ms": 100}),
        ({"reconnect.backoff.max.ms": "10000"}, {"reconnect_backoff_max_ms": 10000}),
        ({"retry.backoff.ms": "200"}, {"retry_backoff_ms": 200}),
        ({"connections.max.idle.ms": "60000"}, {"connections_max_idle_ms": 60000}),
        ({"socket.receive.buffer.bytes": "65536"}, {"receive_buffer_bytes": 65536}),
        ({"send.buffer.bytes": "131072"}, {"send_buffer_bytes": 131072}),
        ({"receive.message.max.bytes": "2000000"}, {"receive_message_max_bytes": 2000000}),
        (
            {"max.in.flight.requests.per.connection": "2"},
            {"max_in_flight_requests_per_connection": 2},
        ),
        ({"enable.ssl.certificate.verification": "true"}, {}),
        ({"request.timeout.ms": 15000}, {"request_timeout_ms": 15000}),
        ({"enable.ssl.certificate.verification": True}, {}),
    ],
)
def test_translation_table(properties: dict, expected: dict) -> None:
    """Properties become kafka-python keywords, with ints for *.ms and normalised names."""
    assert run(properties) == expected


@pytest.mark.parametrize(
    "value, check", [("https", True), ("HTTPS", True), ("", False), ("none", False)]
)
def test_hostname_verification(value: str, check: bool) -> None:
    """ssl.endpoint.identification.algorithm "https" checks host names; "" or "none" does not."""
    args = run({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": value})
    assert args["ssl_check_hostname"] is check


def test_hostname_verification_is_on_when_not_configured() -> None:
    """Without the property nothing is passed, and kafka-python's default verifies host names."""
    assert "ssl_check_hostname" not in run({"security.protocol": "SSL"})
    assert KafkaAdminClient.DEFAULT_CONFIG["ssl_check_hostname"] is True
    assert KafkaConsumer.DEFAULT_CONFIG["ssl_check_hostname"] is True


def test_sasl_kerberos_names_translate(monkeypatch) -> None:
    """GSSAPI takes its service and domain names when the gssapi package is present."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n: object() if n == "gssapi" else real(n)
    )
    args = run(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "GSSAPI",
            "sasl.kerberos.service.name": "kafka",
            "sasl.kerberos.domain.name": "example.com",
        }
    )
    assert args == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "GSSAPI",
        "sasl_kerberos_service_name": "kafka",
        "sasl_kerberos_domain_name": "example.com",
    }


def test_gssapi_without_its_package_is_an_error(monkeypatch) -> None:
    """GSSAPI needs the gssapi package; without it the error says so before anything starts."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "gssapi" else real(n))
    error = error_of({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI"})
    assert error.key == f'{PREFIX}["sasl.mechanism"]' and '"gssapi"' in error.reason


def test_ignored_properties_are_accepted_and_produce_nothing() -> None:
    """Group and commit settings, harmless to a lag reader, are accepted and dropped by design."""
    properties = {name: "1" for name in IGNORED}
    assert run(properties) == {}
    assert all(reason for reason in IGNORED.values())


@pytest.mark.parametrize(
    "properties, name, fragment",
    [
        ({"ssl.truststore.location": "/t.jks"}, "ssl.truststore.location", "ssl.ca.location"),
        ({"ssl.keystore.location": "/k.jks"}, "ssl.keystore.location", "PEM"),
        ({"sasl.jaas.config": "PlainLoginModule required"}, "sasl.jaas.config", "sasl.username"),
        ({"bootstrap.servers": "k:9092"}, "bootstrap.servers", "bootstrap_servers key"),
        ({"sasl.mechnism": "PLAIN"}, "sasl.mechnism", 'did you mean "sasl.mechanism"?'),
        ({"totally.unknown": "x"}, "totally.unknown", "unknown Kafka client property"),
        ({"security.protocol": "TLS"}, "security.protocol", "must be one of PLAINTEXT, SSL"),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "FOO"},
            "sasl.mechanism",
            "must be one of PLAIN",
        ),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
            "sasl.mechanism",
            "OAUTHBEARER is not yet supported",
        ),
        (
            {"sasl.oauthbearer.token.endpoint.url": "https://idp"},
            "sasl.oauthbearer.token.endpoint.url",
            "not yet supported",
        ),
        ({"request.timeout.ms": "30s"}, "request.timeout.ms", "whole number"),
        ({"request.timeout.ms": "0"}, "request.timeout.ms", "at least 1"),
        ({"reconnect.backoff.ms": "-1"}, "reconnect.backoff.ms", "at least 0"),
        (
            {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"},
            "ssl.endpoint.identification.algorithm",
            '"https", "none" or empty',
        ),
        (
            {"enable.ssl.certificate.verification": "false"},
            "enable.ssl.certificate.verification",
            "always verifies",
        ),
        ({"security.protocol": "SSL", "ssl.ca.location": "probe"}, "ssl.ca.location", "PEM file"),
        ({"client.id": ["a"]}, "client.id", "must be a string"),
        ({"sasl.password": True}, "sasl.password", "put the value in quotes"),
        ({"sasl.username": 83}, "sasl.username", "put the value in quotes"),
        ({"request.timeout.ms": True}, "request.timeout.ms", "put the value in quotes"),
        (
            {"request.timeout.ms": "1000", "socket.timeout.ms": "2000"},
            "socket.timeout.ms",
            'same thing as "request.timeout.ms"',
        ),
        ({"sasl.username": "u"}, "sasl.username", "security.protocol is PLAINTEXT"),
        (
            {"security.protocol": "SSL", "sasl.mechanism": "PLAIN"},
            "sasl.mechanism",
            "use SASL_SSL or SASL_PLAINTEXT",
        ),
        ({"ssl.ca.location": "/ca.pem"}, "ssl.ca.location", "use SSL or SASL_SSL"),
        ({"security.protocol": "SASL_SSL"}, "security.protocol", "sasl.mechanism is not set"),
        (
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "u",
            },
            "sasl.mechanism",
            "needs sasl.password",
        ),
        (
            {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "AWS_MSK_IAM"},
            "sasl.mechanism",
            "SASL_SSL",
        ),
        (
            {"security.protocol": "SSL", "ssl.key.location": "/k.pem"},
            "ssl.key.location",
            "without ssl.certificate.location",
        ),
    ],
)
def test_bad_properties_name_the_property(properties: dict, name: str, fragment: str) -> None:
    """An untranslatable, unknown, badly valued or pointless property is an error naming it."""
    error = error_of(properties)
    assert error.source == "test.toml"
    assert error.key == f'{PREFIX}["{name}"]'
    assert fragment in error.reason
    assert "\n" not in str(error)


def test_errors_never_show_secret_values() -> None:
    """A property error mentions neither the password nor the key password."""
    for properties in (
        {"security.protocol": "SSL", "sasl.password": "hunter2-secret"},
        {**SASL_SSL, "sasl.username": "", "sasl.password": "hunter2-secret"},
        {"ssl.key.password": "hunter2-secret"},
        {"ssl.truststore.password": "hunter2-secret"},
        {"sasl.jaas.config": 'password="hunter2-secret";'},
    ):
        assert "hunter2-secret" not in str(error_of(properties))


def test_secret_names_and_arguments() -> None:
    """Passwords are known secrets, both as property names and as kafka-python keywords."""
    assert {"sasl.password", "ssl.key.password", "sasl.jaas.config"} <= SECRET_PROPERTIES
    assert SECRET_ARGS == {"sasl_plain_password", "ssl_password"}
    shown = dict(hide_secrets(run(SASL_SSL)))
    assert shown["sasl_plain_password"] == "***" and shown["sasl_plain_username"] == "u"


def test_msk_iam_args() -> None:
    """The aws_msk_iam table turns on AWS_MSK_IAM over SASL_SSL and refuses conflicting SASL."""
    assert msk_iam_args({}, {"client_id": "x"}, "t", "c.aws_msk_iam") == {
        "client_id": "x", "security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"}
    with pytest.raises(ConfigError, match="conflicts with the SASL settings"):
        msk_iam_args({}, {"sasl_mechanism": "PLAIN"}, "t", "c.aws_msk_iam")
    with pytest.raises(ConfigError, match="needs security.protocol SASL_SSL"):
        msk_iam_args({}, {"security_protocol": "SSL"}, "t", "c.aws_msk_iam")
    with pytest.raises(ConfigError, match='only key here is "region"'):
        msk_iam_args({"role_arn": "x"}, {}, "t", "c.aws_msk_iam")


def test_property_key_quotes_dotted_names() -> None:
    """A property's key path quotes its dotted name so that the path stays unambiguous."""
    assert kafka_properties.property_key(PREFIX, "sasl.mechanism") == f'{PREFIX}["sasl.mechanism"]'
