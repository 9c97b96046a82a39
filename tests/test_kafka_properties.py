"""Translating librdkafka / Java client properties into kafka-python arguments."""

from __future__ import annotations

import importlib.util

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.net.sasl.oauth import AbstractTokenProvider, SaslMechanismOAuth

from klag_collector import kafka_properties
from klag_collector.config import parse_config
from klag_collector.errors import ConfigError
from klag_collector.oauth import ClientCredentialsTokenProvider, UnsecuredJwtTokenProvider
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


@pytest.fixture
def pem_files(tmp_path, monkeypatch) -> None:
    """ca.pem, c.pem, k.pem and crl.pem in the working directory, where the tables' relative
    paths find them: the translation opens every file a property names."""
    for name in ("ca.pem", "c.pem", "k.pem", "crl.pem"):
        (tmp_path / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    monkeypatch.chdir(tmp_path)


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
                "ssl.ca.location": "ca.pem",
                "ssl.certificate.location": "c.pem",
                "ssl.key.location": "k.pem",
                "ssl.key.password": "kp",
                "ssl.crl.location": "crl.pem",
            },
            {
                "security_protocol": "SSL",
                "ssl_cafile": "ca.pem",
                "ssl_certfile": "c.pem",
                "ssl_keyfile": "k.pem",
                "ssl_password": "kp",
                "ssl_crlfile": "crl.pem",
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
@pytest.mark.usefixtures("pem_files")
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
            'needs sasl.oauthbearer.method = "oidc"',
        ),
        (
            {"sasl.oauthbearer.token.endpoint.url": "https://idp"},
            "sasl.oauthbearer.token.endpoint.url",
            "sasl.mechanism is not set, so it would be ignored",
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
        ({"ssl.ca.location": "ca.pem"}, "ssl.ca.location", "use SSL or SASL_SSL"),
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
            {"security.protocol": "SSL", "ssl.key.location": "k.pem"},
            "ssl.key.location",
            "without ssl.certificate.location",
        ),
    ],
)
@pytest.mark.usefixtures("pem_files")
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


# --- SASL/OAUTHBEARER ---------------------------------------------------------------------------

OAUTH_SECRET = "oidc-s3cret-Zq9"
OIDC = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.oauthbearer.method": "oidc",
    "sasl.oauthbearer.token.endpoint.url": "https://idp.example/oauth2/token",
    "sasl.oauthbearer.client.id": "klag",
    "sasl.oauthbearer.client.secret": OAUTH_SECRET,
}
UNSECURED = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "OAUTHBEARER",
    "enable.sasl.oauthbearer.unsecure.jwt": "true",
    "sasl.oauthbearer.config": "principal=admin",
}


def provider_of(properties: dict):
    args = run(properties)
    assert set(args) == {"security_protocol", "sasl_mechanism", "sasl_oauth_token_provider"}
    assert args["sasl_mechanism"] == "OAUTHBEARER"
    return args["sasl_oauth_token_provider"]


def test_oidc_properties_make_a_client_credentials_provider() -> None:
    """librdkafka's oidc method: one token provider object carrying every OIDC setting."""
    p = provider_of({
        **OIDC,
        "sasl.oauthbearer.method": "OIDC",
        "sasl.oauthbearer.scope": "kafka.read kafka.describe",
        "sasl.oauthbearer.extensions": "logicalCluster=lkc-1,identityPoolId=pool-1,",
        "sasl.oauthbearer.grant.type": "client_credentials",
    })
    assert isinstance(p, ClientCredentialsTokenProvider)
    assert isinstance(p, AbstractTokenProvider)  # what kafka-python's OAUTHBEARER checks
    assert SaslMechanismOAuth(sasl_oauth_token_provider=p).token_provider is p
    assert p.token_url == "https://idp.example/oauth2/token"
    assert p.client_id == "klag" and p._client_secret == OAUTH_SECRET
    assert p.scope == "kafka.read kafka.describe"
    assert p.extensions() == {"logicalCluster": "lkc-1", "identityPoolId": "pool-1"}
    assert p.ca_location is None and p.urlencode_credentials is False


def test_oidc_java_and_librdkafka_211_names() -> None:
    """sasl.oauthbearer.client.credentials.client.id/secret (Java 4.1+, librdkafka 2.11+) and
    no sasl.oauthbearer.method (Java has none): OIDC is implied by the token endpoint."""
    p = provider_of({
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
        "sasl.oauthbearer.client.credentials.client.id": "klag",
        "sasl.oauthbearer.client.credentials.client.secret": OAUTH_SECRET,
        "sasl.oauthbearer.header.urlencode": "true",
    })
    assert (p.client_id, p._client_secret, p.urlencode_credentials) == (
        "klag", OAUTH_SECRET, True)


def test_oidc_https_ca_location(tmp_path) -> None:
    """https.ca.location: the CA for the token endpoint (librdkafka's name)."""
    from tls import make_certs

    certs = make_certs(tmp_path, "unused")
    p = provider_of({**OIDC, "https.ca.location": str(certs.ca)})
    assert p.ca_location == str(certs.ca)
    error = error_of({**OIDC, "https.ca.location": str(tmp_path / "missing.pem")})
    assert error.key == f'{PREFIX}["https.ca.location"]'
    assert error.reason == f"{tmp_path / 'missing.pem'}: no such file"


def test_oidc_config_is_accepted_and_unused() -> None:
    """librdkafka's oidc method does not read sasl.oauthbearer.config; neither does this."""
    p = provider_of({**OIDC, "sasl.oauthbearer.config": "anything goes here"})
    assert isinstance(p, ClientCredentialsTokenProvider)


def test_unsecured_jwt_properties() -> None:
    """enable.sasl.oauthbearer.unsecure.jwt with librdkafka's sasl.oauthbearer.config format."""
    p = provider_of({
        **UNSECURED,
        "sasl.oauthbearer.method": "default",
        "sasl.oauthbearer.config": ("principalClaimName=azp principal=admin "
                                    "scopeClaimName=roles scope=r1,r2 lifeSeconds=600 "
                                    "extension_traceId=123"),
    })
    assert isinstance(p, UnsecuredJwtTokenProvider)
    assert (p.principal, p.principal_claim, p.scope_claim, p.scope, p.life_seconds) == (
        "admin", "azp", "roles", ("r1", "r2"), 600)
    assert p.extensions() == {"traceId": "123"}
    assert provider_of(UNSECURED).principal_claim == "sub"


def test_oauthbearer_defaults_are_harmless_without_oauthbearer() -> None:
    """A config spelling out librdkafka's defaults loads with another mechanism."""
    assert run({**SASL_SSL, "sasl.oauthbearer.method": "default",
                "enable.sasl.oauthbearer.unsecure.jwt": "false"}) == SASL_SSL_ARGS


@pytest.mark.parametrize(
    "properties, name, fragment",
    [
        ({**OIDC, "sasl.oauthbearer.token.endpoint.url": None}, "sasl.mechanism",
         "needs sasl.oauthbearer.token.endpoint.url, which is not set"),
        ({**OIDC, "sasl.oauthbearer.client.id": None}, "sasl.mechanism",
         "needs sasl.oauthbearer.client.id, which is not set"),
        ({**OIDC, "sasl.oauthbearer.client.secret": None}, "sasl.mechanism",
         "needs sasl.oauthbearer.client.secret, which is not set"),
        ({**OIDC, "sasl.oauthbearer.client.secret": ""}, "sasl.oauthbearer.client.secret",
         "must not be empty"),
        ({**OIDC, "sasl.oauthbearer.method": "jwt"}, "sasl.oauthbearer.method",
         'must be "oidc" or "default"'),
        ({**OIDC, "sasl.oauthbearer.method": "default"}, "sasl.oauthbearer.token.endpoint.url",
         'only used with sasl.oauthbearer.method "oidc"'),
        ({**OIDC, "sasl.oauthbearer.token.endpoint.url": "ftp://idp/token"},
         "sasl.oauthbearer.token.endpoint.url", "http:// or https://"),
        ({**OIDC, "sasl.oauthbearer.grant.type": "urn:ietf:params:oauth:grant-type:jwt-bearer"},
         "sasl.oauthbearer.grant.type", '"client_credentials" is supported'),
        ({**OIDC, "sasl.oauthbearer.extensions": "auth=x"}, "sasl.oauthbearer.extensions",
         '"auth" is reserved'),
        ({**OIDC, "sasl.oauthbearer.extensions": "novalue"}, "sasl.oauthbearer.extensions",
         "comma-separated name=value"),
        ({**OIDC, "sasl.oauthbearer.client.id": "a:b"}, "sasl.oauthbearer.client.id",
         "sasl.oauthbearer.header.urlencode"),
        ({**OIDC, "sasl.oauthbearer.token.endpoint.url": "http://idp/token",
          "https.ca.location": "ca.pem"}, "https.ca.location", "not https"),
        ({**OIDC, "enable.sasl.oauthbearer.unsecure.jwt": "true"},
         "enable.sasl.oauthbearer.unsecure.jwt", 'cannot be true with sasl.oauthbearer.method'),
        ({**OIDC, "sasl.oauthbearer.client.credentials.client.id": "x"},
         "sasl.oauthbearer.client.credentials.client.id",
         'same thing as "sasl.oauthbearer.client.id"'),
        ({**OIDC, "security.protocol": "SSL"}, "sasl.mechanism", "use SASL_SSL or SASL_PLAINTEXT"),
        ({**SASL_SSL, "sasl.oauthbearer.client.id": "klag"}, "sasl.oauthbearer.client.id",
         "sasl.mechanism is PLAIN, so it would be ignored"),
        ({**UNSECURED, "enable.sasl.oauthbearer.unsecure.jwt": "false"}, "sasl.mechanism",
         'needs sasl.oauthbearer.method = "oidc"'),
        ({**UNSECURED, "sasl.oauthbearer.config": None}, "sasl.mechanism",
         "needs sasl.oauthbearer.config"),
        ({**UNSECURED, "sasl.oauthbearer.config": "scope=a"}, "sasl.oauthbearer.config",
         'has no "principal=NAME"'),
        ({**UNSECURED, "sasl.oauthbearer.config": "principal=a lifeSecond=3"},
         "sasl.oauthbearer.config", 'unknown name (did you mean "lifeSeconds"?)'),
        ({**UNSECURED, "sasl.oauthbearer.config": "principal=a lifeSeconds=0"},
         "sasl.oauthbearer.config", "at least 1"),
        ({**UNSECURED, "sasl.oauthbearer.config": "principal=a extension_x-y=1"},
         "sasl.oauthbearer.config", "extension_NAME whose name is not letters only"),
        ({"sasl.login.callback.handler.class": "x.OAuthBearerLoginCallbackHandler"},
         "sasl.login.callback.handler.class", "needs no handler"),
        ({"sasl.jaas.config": "OAuthBearerLoginModule required clientSecret=\"x\";"},
         "sasl.jaas.config", "sasl.oauthbearer.client.secret"),
        ({"sasl.oauthbearer.assertion.private.key.file": "/k.pem"},
         "sasl.oauthbearer.assertion.private.key.file", "jwt-bearer grant is not supported"),
    ],
)
@pytest.mark.usefixtures("pem_files")
def test_bad_oauthbearer_properties(properties: dict, name: str, fragment: str) -> None:
    """Missing, conflicting or untranslatable OAUTHBEARER settings are errors naming a key."""
    error = error_of({k: v for k, v in properties.items() if v is not None})
    assert error.key == f'{PREFIX}["{name}"]'
    assert fragment in error.reason
    assert "\n" not in str(error) and OAUTH_SECRET not in str(error)


def test_oauthbearer_errors_never_show_secret_values() -> None:
    """Neither the client secret nor the unsecured-JWT config reach an error message."""
    for properties in (
        {**OIDC, "sasl.oauthbearer.token.endpoint.url": "nope"},
        {**OIDC, "sasl.oauthbearer.client.credentials.client.secret": OAUTH_SECRET},
        {**OIDC, "sasl.oauthbearer.method": "default"},
        {**SASL_SSL, "sasl.oauthbearer.client.secret": OAUTH_SECRET},
        {**UNSECURED, "sasl.oauthbearer.config": f"principal=a {OAUTH_SECRET}"},
        {**UNSECURED, "sasl.oauthbearer.config": f"principal=a {OAUTH_SECRET}=x"},
        {**UNSECURED, "sasl.oauthbearer.config": f"principal=a principal={OAUTH_SECRET}"},
        {**UNSECURED, "sasl.oauthbearer.config": "principal=a hunter2=x"},
    ):
        text = str(error_of(properties))
        assert OAUTH_SECRET not in text and "hunter2" not in text


def test_oauthbearer_secret_is_hidden_in_reprs() -> None:
    """The provider's repr masks the client secret, in kafka_args and in the whole config."""
    assert {"sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.credentials.client.secret"} <= SECRET_PROPERTIES
    args = run(OIDC)
    assert OAUTH_SECRET not in repr(args) and OAUTH_SECRET not in repr(hide_secrets(args))
    assert "client_secret='***'" in repr(args)
    lines = "".join(f'"{k}" = "{v}"\n' for k, v in OIDC.items())
    text = ('[[clusters]]\nname = "c"\nbootstrap_servers = "k:9093"\n'
            f"[clusters.consumer_properties]\n{lines}")
    config = parse_config(text, "test.toml", "toml")
    assert OAUTH_SECRET not in repr(config) and OAUTH_SECRET not in str(config)
    assert OAUTH_SECRET not in repr(config.clusters[0].kafka_args)
    assert "idp.example" in repr(config.clusters[0])  # the rest stays visible for diagnosis
    # Parsing the same file twice gives equal configurations.
    assert parse_config(text, "test.toml", "toml") == config


def test_oauthbearer_token_provider_is_accepted_by_both_clients() -> None:
    """The one multi-property keyword is a real argument of KafkaAdminClient and KafkaConsumer."""
    parts = [name for name, rule in TRANSLATED.items() if rule.part is not None]
    assert {TRANSLATED[name].arg for name in parts} == {"sasl_oauth_token_provider"}
    assert "sasl_oauth_token_provider" in KafkaAdminClient.DEFAULT_CONFIG
    assert "sasl_oauth_token_provider" in KafkaConsumer.DEFAULT_CONFIG


def test_no_property_naming_a_file_is_secret(tmp_path) -> None:
    """The properties whose errors name their file, found by giving each a missing one, are
    exactly the file locations, and none is a secret: naming the path leaks nothing."""
    missing = str(tmp_path / "absent")

    def names_the_file(name: str) -> bool:
        try:
            run({name: missing})
        except ConfigError as e:
            return e.reason == f"{missing}: no such file"
        return False

    named = {name for name in TRANSLATED if names_the_file(name)}
    assert named == {"ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
                     "ssl.crl.location", "https.ca.location"}
    assert not named & SECRET_PROPERTIES
