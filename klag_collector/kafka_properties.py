"""librdkafka / Java client properties, as klag-exporter configs carry them, for kafka-python.

``TRANSLATED`` is the one table: property name -> kafka-python 3.x keyword and value conversion.
Every keyword in it is accepted by both ``KafkaAdminClient`` and ``KafkaConsumer`` (a test checks
this against their ``DEFAULT_CONFIG``), since both are built from the same arguments.

A row whose value names a file converts it with ``_file`` (or ``_file_or_directory``): the file
must open when the config is loaded, so that a wrong path fails ``--check`` and start-up rather
than the first connection.

A property missing from the table is an error naming it; nothing is dropped silently. The only
exceptions are listed in ``IGNORED``, each with the reason it cannot matter to a lag reader.
``UNSUPPORTED`` holds known properties that cannot be translated, with what to do instead.

SASL/OAUTHBEARER takes several properties that together make one argument, the token provider
object (``sasl_oauth_token_provider``): their rows name the provider setting they fill
(``Translation.part``), and ``_token_provider`` builds the object once all are read.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import stat
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional, Tuple

from klag_collector import oauth
from klag_collector.errors import ConfigError

_MECHANISMS = (
    "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER", "AWS_MSK_IAM",
)
_PROVIDER = "sasl_oauth_token_provider"


def _choice(*allowed: str, upper: bool = True) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.strip().upper() if upper else text.strip()
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return value

    return convert


def _mechanism(text: str) -> str:
    value = text.strip().upper()
    if value not in _MECHANISMS:
        raise ValueError("must be one of " + ", ".join(_MECHANISMS))
    return value


def _whole(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return convert


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    if text.strip().lower() == "probe":
        raise ValueError('"probe" is librdkafka-only; give the path of a PEM file')
    return text


def _opened_is_directory(path: str) -> bool:
    """Whether *path*, opened for reading, is a directory; OSError when it cannot be opened."""
    # Opening is the one true test of readability: os.access answers for the real uid and
    # knows nothing of, say, NFS root squashing. O_NONBLOCK keeps a FIFO from hanging the check.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _readable(text: str, directory_ok: bool) -> str:
    # The error names the path: it says where to look, and no property naming a file is a
    # secret (a test checks).
    path = _path(text)
    try:
        is_directory = _opened_is_directory(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: not readable ({e.strerror})") from None
    if is_directory and not directory_ok:
        raise ValueError(f"{path}: is a directory; kafka-python needs a PEM file")
    return path


def _file(text: str) -> str:
    """A PEM file the clients will read: it must exist and open now, not at the first connect."""
    return _readable(text, directory_ok=False)


def _file_or_directory(text: str) -> str:
    """A CA file, or a directory of them (OpenSSL's capath), for the token endpoint."""
    return _readable(text, directory_ok=True)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def _hostname_check(text: str) -> bool:
    # "https" is the only algorithm librdkafka and Java know; empty or "none" turns it off.
    value = text.strip().lower()
    if value == "https":
        return True
    if value in ("", "none"):
        return False
    raise ValueError('must be "https", "none" or empty')


def _oauthbearer_method(text: str) -> str:
    value = text.strip().lower()
    if value not in ("oidc", "default"):
        raise ValueError('must be "oidc" or "default"')
    return value


def _grant_type(text: str) -> str:
    value = text.strip()
    if value != "client_credentials":
        raise ValueError('only "client_credentials" is supported')
    return value


def _token_url(text: str) -> str:
    return oauth.check_token_url(text)


def _key_values(text: str, separator: str, what: str) -> Dict[str, str]:
    """``k=v<separator>k=v`` as a dict; errors name the key, never a value (it may be secret)."""
    pairs: Dict[str, str] = {}
    for item in text.split(separator) if separator else text.split():
        item = item.strip()
        if not item:
            continue  # "a=1,b=2," as in Confluent's examples
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"must be {what}; an item has no name=")
        if key in pairs:
            raise ValueError("a name is given twice")
        pairs[key] = value.strip()
    return pairs


def _extensions(text: str) -> Dict[str, str]:
    return oauth.check_extensions(_key_values(text, ",", "comma-separated name=value pairs"))


_UNSECURED_FIELDS = ("principalClaimName", "principal", "scopeClaimName", "scope", "lifeSeconds")


def _unsecured_jwt_config(text: str) -> Dict[str, Any]:
    """librdkafka's unsecured-JWT ``sasl.oauthbearer.config``, as UnsecuredJwtTokenProvider args.

    Space-separated ``name=value``: principalClaimName (default "sub"), principal,
    scopeClaimName (default "scope"), scope (comma-separated), lifeSeconds (default 3600),
    and ``extension_NAME=value`` for SASL extensions.
    """
    fields = _key_values(text, "", "space-separated name=value pairs")
    args: Dict[str, Any] = {}
    extensions: Dict[str, str] = {}
    for name, value in fields.items():
        if name.startswith("extension_"):
            extensions[name[len("extension_"):]] = value
        elif name not in _UNSECURED_FIELDS:
            # The property is secret: the unknown name is not repeated, only a known one.
            close = difflib.get_close_matches(name, _UNSECURED_FIELDS, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise ValueError(f"has an unknown name{hint}; the names are "
                             f'{", ".join(_UNSECURED_FIELDS)} and extension_NAME')
        elif not value:
            raise ValueError(f'"{name}" is empty')
    if "principal" in fields:
        args["principal"] = fields["principal"]
    if "principalClaimName" in fields:
        args["principal_claim"] = fields["principalClaimName"]
    if "scopeClaimName" in fields:
        args["scope_claim"] = fields["scopeClaimName"]
    if "scope" in fields:
        args["scope"] = tuple(s.strip() for s in fields["scope"].split(",") if s.strip())
    if "lifeSeconds" in fields:
        try:
            args["life_seconds"] = int(fields["lifeSeconds"])
        except ValueError:
            raise ValueError('"lifeSeconds" must be a whole number') from None
        if args["life_seconds"] < 1:
            raise ValueError('"lifeSeconds" must be at least 1')
    if extensions:
        try:
            args["extensions"] = oauth.check_extensions(extensions)
        except ValueError:  # its message names the extension: not repeated from a secret
            raise ValueError("has an extension_NAME whose name is not letters only, or whose "
                             "value is not printable ASCII (RFC 7628)") from None
    return args


def _certificate_verification(text: str) -> None:
    if not _bool(text):
        raise ValueError(
            "false is not supported: kafka-python always verifies the broker's certificate; "
            "give the broker's CA with ssl.ca.location"
        )
    return None  # true is kafka-python's behaviour already: no argument needed


@dataclass(frozen=True)
class Translation:
    """How one property becomes a kafka-python keyword argument (none when ``arg`` is None).

    ``native`` is the one non-string TOML/YAML type also accepted for the value (klag-exporter
    takes strings only): ``timeout.ms = 5000`` is a forgivable slip, but a YAML ``yes`` or
    ``0123`` arriving as a password must not be silently turned into "true" or "83".

    ``part``, when set, makes the value one setting of the object passed as ``arg`` (the
    OAUTHBEARER token provider) rather than ``arg`` itself.
    """

    arg: Optional[str]
    convert: Callable[[str], Any]
    native: type = str
    part: Optional[str] = None


def _provider(
    part: str, convert: Callable[[str], Any] = _text, native: type = str
) -> Translation:
    return Translation(_PROVIDER, convert, native, part)


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

TRANSLATED: Dict[str, Translation] = {
    "security.protocol": Translation("security_protocol", _choice(*_PROTOCOLS)),
    "sasl.mechanism": Translation("sasl_mechanism", _mechanism),
    "sasl.mechanisms": Translation("sasl_mechanism", _mechanism),  # librdkafka alias
    "sasl.username": Translation("sasl_plain_username", _text),
    "sasl.password": Translation("sasl_plain_password", _text),
    "sasl.kerberos.service.name": Translation("sasl_kerberos_service_name", _text),
    "sasl.kerberos.domain.name": Translation("sasl_kerberos_domain_name", _text),
    "ssl.ca.location": Translation("ssl_cafile", _file),
    "ssl.certificate.location": Translation("ssl_certfile", _file),
    "ssl.key.location": Translation("ssl_keyfile", _file),
    "ssl.key.password": Translation("ssl_password", _text),
    "ssl.crl.location": Translation("ssl_crlfile", _file),
    "ssl.endpoint.identification.algorithm": Translation("ssl_check_hostname", _hostname_check),
    "enable.ssl.certificate.verification": Translation(None, _certificate_verification, bool),
    "client.id": Translation("client_id", _text),
    "client.dns.lookup": Translation(
        "client_dns_lookup",
        _choice("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only", upper=False),
    ),
    "request.timeout.ms": Translation("request_timeout_ms", _whole(1), int),
    "socket.timeout.ms": Translation("request_timeout_ms", _whole(1), int),  # librdkafka's name
    "metadata.max.age.ms": Translation("metadata_max_age_ms", _whole(0), int),
    "reconnect.backoff.ms": Translation("reconnect_backoff_ms", _whole(0), int),
    "reconnect.backoff.max.ms": Translation("reconnect_backoff_max_ms", _whole(0), int),
    "retry.backoff.ms": Translation("retry_backoff_ms", _whole(0), int),
    "connections.max.idle.ms": Translation("connections_max_idle_ms", _whole(0), int),
    "socket.receive.buffer.bytes": Translation("receive_buffer_bytes", _whole(1), int),
    "receive.buffer.bytes": Translation("receive_buffer_bytes", _whole(1), int),  # Java's name
    "socket.send.buffer.bytes": Translation("send_buffer_bytes", _whole(1), int),
    "send.buffer.bytes": Translation("send_buffer_bytes", _whole(1), int),  # Java's name
    "receive.message.max.bytes": Translation("receive_message_max_bytes", _whole(1), int),
    "max.in.flight.requests.per.connection": Translation(
        "max_in_flight_requests_per_connection", _whole(1), int
    ),
    "max.in.flight": Translation("max_in_flight_requests_per_connection", _whole(1), int),
    # OAUTHBEARER: settings of the token provider, see _token_provider.
    "sasl.oauthbearer.method": _provider("method", _oauthbearer_method),
    "sasl.oauthbearer.token.endpoint.url": _provider("token_url", _token_url),
    "sasl.oauthbearer.client.id": _provider("client_id"),
    # librdkafka 2.11+ alias and Java 4.1+ name:
    "sasl.oauthbearer.client.credentials.client.id": _provider("client_id"),
    "sasl.oauthbearer.client.secret": _provider("client_secret"),
    "sasl.oauthbearer.client.credentials.client.secret": _provider("client_secret"),
    "sasl.oauthbearer.scope": _provider("scope"),
    "sasl.oauthbearer.extensions": _provider("extensions", _extensions),
    "sasl.oauthbearer.grant.type": _provider("grant_type", _grant_type),
    "sasl.oauthbearer.header.urlencode": _provider("urlencode_credentials", _bool, bool),  # Java
    "https.ca.location": _provider("ca_location", _file_or_directory),
    "enable.sasl.oauthbearer.unsecure.jwt": _provider("unsecure_jwt", _bool, bool),
    # Parsed by _token_provider, and only for the unsecured JWT: librdkafka's oidc ignores it.
    "sasl.oauthbearer.config": _provider("config"),
}

# Accepted and ignored, because each only matters to a client that joins a group, commits,
# or logs through librdkafka, and this exporter does none of that.
_GROUP_ONLY = "group membership setting; the exporter never joins a consumer group"
IGNORED: Dict[str, str] = {
    "group.id": "the exporter reads committed offsets of other groups and never joins one",
    "enable.auto.commit": "the exporter never commits offsets",
    "auto.commit.interval.ms": "the exporter never commits offsets",
    "enable.auto.offset.store": "the exporter never commits offsets",
    "auto.offset.reset": "the exporter seeks to explicit offsets, never to a reset position",
    "session.timeout.ms": _GROUP_ONLY,
    "heartbeat.interval.ms": _GROUP_ONLY,
    "max.poll.interval.ms": _GROUP_ONLY,
    "partition.assignment.strategy": _GROUP_ONLY,
    "group.instance.id": _GROUP_ONLY,
    "enable.partition.eof": "librdkafka consumer event; kafka-python has no such event",
    "statistics.interval.ms": "librdkafka statistics callback; the exporter has its own metrics",
    "debug": "librdkafka debug logging; use klag-collector's -l option",
    "log_level": "librdkafka logging; use klag-collector's -l option",
    "socket.connection.setup.timeout.ms": (
        "kafka-python 3.0.12 clients do not accept it and use 10 s; "
        "performance.kafka_timeout bounds every Kafka call"
    ),
    "socket.connection.setup.timeout.max.ms": (
        "kafka-python 3.0.12 clients do not accept it and use 30 s; "
        "performance.kafka_timeout bounds every Kafka call"
    ),
}

_PEM_FILES = (
    "convert it to PEM files and use ssl.ca.location, ssl.certificate.location "
    "and ssl.key.location"
)
_KERBEROS_CACHE = (
    "kafka-python uses the Kerberos credential cache; run kinit or set KRB5_CLIENT_KTNAME"
)
_JWT_BEARER = (
    "the jwt-bearer grant is not supported; use the client-credentials grant "
    "(sasl.oauthbearer.client.id and sasl.oauthbearer.client.secret)"
)
UNSUPPORTED: Dict[str, str] = {
    "ssl.truststore.location": f"Java keystores (JKS/PKCS12) cannot be read; {_PEM_FILES}",
    "ssl.truststore.password": f"Java keystores (JKS/PKCS12) cannot be read; {_PEM_FILES}",
    "ssl.truststore.type": f"Java keystores (JKS/PKCS12) cannot be read; {_PEM_FILES}",
    "ssl.truststore.certificates": "inline certificates are not supported; use ssl.ca.location",
    "ssl.keystore.location": f"Java keystores (JKS/PKCS12) cannot be read; {_PEM_FILES}",
    "ssl.keystore.password": f"Java keystores (JKS/PKCS12) cannot be read; {_PEM_FILES}",
    "ssl.keystore.type": f"Java keystores (JKS/PKCS12) cannot be read; {_PEM_FILES}",
    "ssl.keystore.key": "inline keys are not supported; use ssl.key.location",
    "ssl.keystore.certificate.chain": (
        "inline certificates are not supported; use ssl.certificate.location"
    ),
    "ssl.ca.pem": "inline certificates are not supported; use ssl.ca.location",
    "ssl.certificate.pem": "inline certificates are not supported; use ssl.certificate.location",
    "ssl.key.pem": "inline keys are not supported; use ssl.key.location",
    "ssl.keystore.location.pem": f"not supported; {_PEM_FILES}",
    "ssl.cipher.suites": "kafka-python's admin client cannot restrict cipher suites",
    "ssl.enabled.protocols": "kafka-python always negotiates TLS 1.2 or newer",
    "ssl.protocol": "kafka-python always negotiates TLS 1.2 or newer",
    "sasl.jaas.config": (
        "not translatable; use sasl.username and sasl.password (PLAIN, SCRAM), or for "
        "OAUTHBEARER sasl.oauthbearer.client.id, sasl.oauthbearer.client.secret and "
        "sasl.oauthbearer.scope"
    ),
    "sasl.kerberos.keytab": _KERBEROS_CACHE,
    "sasl.kerberos.principal": _KERBEROS_CACHE,
    "sasl.kerberos.kinit.cmd": "kafka-python does not run kinit; run it before the exporter",
    "sasl.login.callback.handler.class": (
        "Java classes cannot be loaded; OAUTHBEARER with sasl.oauthbearer.token.endpoint.url "
        "(sasl.oauthbearer.method oidc) needs no handler"
    ),
    "sasl.oauthbearer.jwt.retriever.class": (
        "Java classes cannot be loaded; the client-credentials grant is used "
        "(sasl.oauthbearer.method oidc)"
    ),
    "sasl.oauthbearer.metadata.authentication.type": (
        "cloud metadata credentials are not supported; use a client id and secret "
        "(sasl.oauthbearer.method oidc)"
    ),
    "sasl.oauthbearer.assertion.algorithm": _JWT_BEARER,
    "sasl.oauthbearer.assertion.private.key.file": _JWT_BEARER,
    "sasl.oauthbearer.assertion.private.key.passphrase": _JWT_BEARER,
    "sasl.oauthbearer.assertion.template.file": _JWT_BEARER,
    "sasl.oauthbearer.assertion.file": _JWT_BEARER,
    "https.ca.pem": "inline certificates are not supported; use https.ca.location",
    "bootstrap.servers": "set the cluster's bootstrap_servers key instead",
    "isolation.level": "kafka-python's admin client has no isolation level",
}

SECRET_PROPERTIES = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.truststore.password",
        "ssl.keystore.key",
        "ssl.key.pem",
        "sasl.jaas.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.config",
    }
)
# The kafka-python keywords whose values are secrets; reprs must hide them. A secret that is one
# setting of an object (the OAUTHBEARER client secret) is hidden by that object's own repr.
SECRET_ARGS = frozenset(
    TRANSLATED[name].arg
    for name in SECRET_PROPERTIES
    if name in TRANSLATED and TRANSLATED[name].part is None
)

# Which package each SASL mechanism needs at run time, beyond kafka-python itself.
_MECHANISM_PACKAGES = {"GSSAPI": "gssapi", "AWS_MSK_IAM": "botocore"}


def property_key(key_prefix: str, name: str) -> str:
    """The key path of one property, e.g. ``clusters[0].consumer_properties["sasl.mechanism"]``."""
    return f'{key_prefix}["{name}"]'


def translate(properties: Mapping[str, Any], source: str, key_prefix: str) -> Dict[str, Any]:
    """Return kafka-python keyword arguments for *properties*, or raise ConfigError."""
    args: Dict[str, Any] = {}
    origin: Dict[str, str] = {}  # kafka-python keyword -> the property that set it
    parts: Dict[str, Any] = {}  # token provider setting -> value
    part_origin: Dict[str, str] = {}  # token provider setting -> the property that set it
    for name, raw in properties.items():
        key = property_key(key_prefix, name)
        if name in IGNORED:
            continue
        if name in UNSUPPORTED:
            raise ConfigError(source, key, UNSUPPORTED[name])
        rule = TRANSLATED.get(name)
        if rule is None:
            raise ConfigError(source, key, _unknown_reason(name))
        try:
            value = rule.convert(_as_text(raw, rule.native))
        except ValueError as e:
            raise ConfigError(source, key, str(e)) from None
        if rule.arg is None:
            continue
        if rule.part is not None:
            if rule.part in part_origin:
                raise ConfigError(
                    source, key, f'sets the same thing as "{part_origin[rule.part]}"; keep one'
                )
            parts[rule.part] = value
            part_origin[rule.part] = name
            continue
        if rule.arg in origin:
            raise ConfigError(source, key, f'sets the same thing as "{origin[rule.arg]}"; keep one')
        args[rule.arg] = value
        origin[rule.arg] = name
    _check_coherence(args, origin, source, key_prefix)
    _token_provider(args, origin, parts, part_origin, source, key_prefix)
    return args


def _as_text(raw: Any, native: type) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool) and native is bool:
        return "true" if raw else "false"
    if isinstance(raw, int) and not isinstance(raw, bool) and native is int:
        return str(raw)
    raise ValueError("must be a string (put the value in quotes)")


def _unknown_reason(name: str) -> str:
    known = list(TRANSLATED) + list(IGNORED) + list(UNSUPPORTED)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f"unknown Kafka client property{hint}"


def _check_coherence(
    args: Mapping[str, Any], origin: Mapping[str, str], source: str, key_prefix: str
) -> None:
    """Reject combinations kafka-python would ignore or fail on only at connect time."""

    def fail(arg: str, reason: str) -> None:
        raise ConfigError(source, property_key(key_prefix, origin[arg]), reason)

    protocol = args.get("security_protocol", "PLAINTEXT")
    mechanism = args.get("sasl_mechanism")
    uses_sasl = protocol.startswith("SASL_")
    uses_ssl = protocol.endswith("SSL")
    for arg in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                "sasl_kerberos_service_name", "sasl_kerberos_domain_name"):
        if arg in args and not uses_sasl:
            fail(arg, f"is set but security.protocol is {protocol}, so it would be ignored; "
                      "use SASL_SSL or SASL_PLAINTEXT")
    # ssl.endpoint.identification.algorithm is left out: Java configs often carry an empty one
    # next to SASL_PLAINTEXT, and saying "check host names if TLS is used" is harmless.
    for arg in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_crlfile"):
        if arg in args and not uses_ssl:
            fail(arg, f"is set but security.protocol is {protocol}, so it would be ignored; "
                      "use SSL or SASL_SSL")
    if uses_sasl and mechanism is None:
        fail("security_protocol", f"is {protocol} but sasl.mechanism is not set")
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        for arg, prop in (("sasl_plain_username", "sasl.username"),
                          ("sasl_plain_password", "sasl.password")):
            if arg not in args:
                fail("sasl_mechanism", f"{mechanism} needs {prop}, which is not set")
    if mechanism == "AWS_MSK_IAM" and protocol != "SASL_SSL":
        fail("sasl_mechanism", "AWS_MSK_IAM needs security.protocol SASL_SSL")
    package = _MECHANISM_PACKAGES.get(mechanism or "")
    if package and importlib.util.find_spec(package) is None:
        fail("sasl_mechanism", f'{mechanism} needs the Python package "{package}" (not installed)')
    if "ssl_keyfile" in args and "ssl_certfile" not in args:
        fail("ssl_keyfile", "is set without ssl.certificate.location")
    if "ssl_password" in args and "ssl_keyfile" not in args and "ssl_certfile" not in args:
        fail("ssl_password", "is set without ssl.key.location or ssl.certificate.location")


_OIDC_PARTS = (
    "token_url", "client_id", "client_secret", "scope", "extensions", "grant_type",
    "urlencode_credentials", "ca_location",
)
_PART_DEFAULTS = {
    "method": "default", "unsecure_jwt": False, "grant_type": "client_credentials",
    "urlencode_credentials": False,
}
_OIDC_REQUIRED = (
    ("token_url", "sasl.oauthbearer.token.endpoint.url"),
    ("client_id", "sasl.oauthbearer.client.id"),
    ("client_secret", "sasl.oauthbearer.client.secret"),
)


@dataclass(frozen=True)
class _OauthSettings:
    """The sasl.oauthbearer.* settings of one cluster, and where each came from, for errors."""

    parts: Mapping[str, Any]
    part_origin: Mapping[str, str]
    source: str
    key_prefix: str
    # The property that chose OAUTHBEARER ("sasl.mechanism"), blamed for what is missing.
    mechanism_origin: str = ""

    def fail_part(self, part: str, reason: str) -> NoReturn:
        raise ConfigError(self.source, property_key(self.key_prefix, self.part_origin[part]), reason)

    def fail(self, reason: str) -> NoReturn:
        raise ConfigError(self.source, property_key(self.key_prefix, self.mechanism_origin), reason)

    def given(self, names: Iterable[str]) -> List[str]:
        """The settings among *names* set to something else than librdkafka's default."""
        return [p for p in names if p in self.parts and self.parts[p] != _PART_DEFAULTS.get(p, ...)]


def _token_provider(
    args: Dict[str, Any],
    origin: Dict[str, str],
    parts: Mapping[str, Any],
    part_origin: Mapping[str, str],
    source: str,
    key_prefix: str,
) -> None:
    """Build ``args["sasl_oauth_token_provider"]`` from the OAUTHBEARER settings, if wanted.

    librdkafka's ``sasl.oauthbearer.method``: "oidc" is the client-credentials grant at
    ``sasl.oauthbearer.token.endpoint.url``; "default" (librdkafka's default) is an unsecured
    JWT when ``enable.sasl.oauthbearer.unsecure.jwt`` is true, and otherwise a token set by
    application code, which a config file cannot supply. Without the property, the method is
    "oidc" when any OIDC setting is given (Java configs have no such property), else "default".
    """
    mechanism = args.get("sasl_mechanism")
    settings = _OauthSettings(parts, part_origin, source, key_prefix)
    if mechanism != "OAUTHBEARER":
        # Settings left at librdkafka's defaults (configs often spell them out) are harmless.
        for part in settings.given(part_origin):
            settings.fail_part(part, f"is an OAUTHBEARER setting but sasl.mechanism is "
                                     f"{mechanism or 'not set'}, so it would be ignored")
        return
    # "sasl.mechanism" set it, and _check_coherence already required a SASL protocol.
    settings = replace(settings, mechanism_origin=origin["sasl_mechanism"])
    oidc_given = settings.given(_OIDC_PARTS)
    method = parts.get("method") or ("oidc" if oidc_given else "default")
    if method == "default":
        if oidc_given:
            settings.fail_part(oidc_given[0], 'is only used with sasl.oauthbearer.method "oidc"')
        args[_PROVIDER] = _unsecured_jwt_provider(settings)
        origin[_PROVIDER] = part_origin["config"]
    else:
        args[_PROVIDER] = _client_credentials_provider(settings)
        origin[_PROVIDER] = part_origin["token_url"]


def _unsecured_jwt_provider(settings: _OauthSettings) -> oauth.UnsecuredJwtTokenProvider:
    """librdkafka's unsigned test tokens (method "default" with unsecure.jwt)."""
    parts = settings.parts
    if not parts.get("unsecure_jwt"):
        settings.fail('OAUTHBEARER needs sasl.oauthbearer.method = "oidc" with '
                      "sasl.oauthbearer.token.endpoint.url, sasl.oauthbearer.client.id and "
                      'sasl.oauthbearer.client.secret (method "default" takes a token from '
                      "application code, or an unsecured test token with "
                      'enable.sasl.oauthbearer.unsecure.jwt = "true")')
    if "config" not in parts:
        settings.fail("OAUTHBEARER with enable.sasl.oauthbearer.unsecure.jwt needs "
                      'sasl.oauthbearer.config ("principal=NAME ..."), which is not set')
    try:
        config = _unsecured_jwt_config(parts["config"])
    except ValueError as e:
        settings.fail_part("config", str(e))
    if "principal" not in config:
        settings.fail_part("config", 'has no "principal=NAME"')
    return oauth.UnsecuredJwtTokenProvider(**config)


def _client_credentials_provider(
    settings: _OauthSettings,
) -> oauth.ClientCredentialsTokenProvider:
    """The OIDC client-credentials grant (method "oidc"), its settings checked first."""
    parts = settings.parts
    if parts.get("unsecure_jwt"):
        settings.fail_part("unsecure_jwt", 'cannot be true with sasl.oauthbearer.method "oidc"')
    for part, name in _OIDC_REQUIRED:
        if part not in parts:
            settings.fail(
                f"OAUTHBEARER (sasl.oauthbearer.method oidc) needs {name}, which is not set"
            )
    if "ca_location" in parts and not parts["token_url"].lower().startswith("https:"):
        settings.fail_part("ca_location", "is set but sasl.oauthbearer.token.endpoint.url is "
                                          "not https, so it would be ignored")
    urlencode = parts.get("urlencode_credentials", False)
    if ":" in parts["client_id"] and not urlencode:
        settings.fail_part("client_id", 'contains ":", which HTTP Basic authentication cannot '
                                        'carry; set "sasl.oauthbearer.header.urlencode" = "true" '
                                        "if the identity provider decodes it (RFC 6749 2.3.1)")
    # sasl.oauthbearer.config is accepted and unused here, as librdkafka's oidc method does.
    try:
        return oauth.ClientCredentialsTokenProvider(
            parts["token_url"], parts["client_id"], parts["client_secret"],
            scope=parts.get("scope"), extensions=parts.get("extensions"),
            ca_location=parts.get("ca_location"), urlencode_credentials=urlencode,
        )
    except OSError as e:  # https.ca.location opens (_file_or_directory) but is no CA (ssl.SSLError)
        reason = re.sub(r"\s*\(_ssl\.c:\d+\)", "", e.strerror or type(e).__name__)
        settings.fail_part("ca_location", f"cannot be loaded: {reason}")


def msk_iam_args(
    table: Mapping[str, Any], kafka_args: Mapping[str, Any], source: str, key_prefix: str
) -> Dict[str, Any]:
    """Arguments for klag-exporter's ``[clusters.aws_msk_iam]`` table: SASL AWS_MSK_IAM over TLS.

    kafka-python signs with botocore's credentials and region, so a region given in the file
    cannot be passed on; rather than connect to the wrong region, that is an error.
    """
    for name in table:
        if name == "region":
            raise ConfigError(
                source, f"{key_prefix}.region",
                "cannot be passed to kafka-python; set AWS_DEFAULT_REGION in the environment",
            )
        raise ConfigError(
            source, f"{key_prefix}.{name}", 'unknown key; the only key here is "region"'
        )
    for arg in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        if arg in kafka_args:
            raise ConfigError(
                source, key_prefix, "conflicts with the SASL settings in consumer_properties"
            )
    if kafka_args.get("security_protocol", "SASL_SSL") != "SASL_SSL":
        raise ConfigError(source, key_prefix, "needs security.protocol SASL_SSL")
    if importlib.util.find_spec("botocore") is None:
        raise ConfigError(source, key_prefix, 'needs the Python package "botocore" (not installed)')
    return {**kafka_args, "security_protocol": "SASL_SSL", "sasl_mechanism": "AWS_MSK_IAM"}


def hide_secrets(kafka_args: Mapping[str, Any]) -> List[Tuple[str, Any]]:
    """The arguments as pairs, secret values replaced, for reprs and logs."""
    return [(k, "***" if k in SECRET_ARGS else v) for k, v in kafka_args.items()]
