"""OAUTHBEARER token providers against a real token endpoint on 127.0.0.1.

`TokenServer` is http.server in a thread on a free port, playing an OAuth 2.0 authorization
server: it records each request (method, path, headers, form) and answers what the test queued.
Proxy variables are cleared so that nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import queue
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from kafka.net.sasl.oauth import AbstractTokenProvider, SaslMechanismOAuth

from klag_collector import logs
from klag_collector.oauth import (
    ClientCredentialsTokenProvider,
    TokenError,
    UnsecuredJwtTokenProvider,
    check_extensions,
    refresh_delay,
)
from tls import make_certs

CLIENT_ID = "klag-exporter"
SECRET = "s3cr3t-Zq9+/="  # Base64-ish characters, as generated secrets have


@dataclass
class Seen:
    method: str
    path: str
    headers: Dict[str, str]
    form: Dict[str, List[str]]


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # dict/list: sent as JSON; bytes/str: sent as is
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class TokenServer:
    """A token endpoint at ``url``; answers from ``answers`` (else a fresh token each time)."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        self.requests: List[Seen] = []
        self.answers: "queue.Queue[Answer]" = queue.Queue()
        self.issued = 0
        self.issue: Optional[Callable[[Seen], Answer]] = None  # else "token-N" for each POST
        self.jwks: Optional[dict] = None  # served at GET /jwks when set
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("ascii")
                seen = Seen("POST", self.path, dict(self.headers.items()),
                            urllib.parse.parse_qs(body))
                server.requests.append(seen)
                self._answer(seen)

            def do_GET(self) -> None:  # noqa: N802
                seen = Seen("GET", self.path, dict(self.headers.items()), {})
                server.requests.append(seen)
                if self.path == "/jwks" and server.jwks is not None:
                    self._answer(seen, Answer(body=server.jwks))
                else:
                    self._answer(seen)

            def _answer(self, seen: Seen, answer: Optional[Answer] = None) -> None:
                try:
                    answer = answer or server.answers.get_nowait()
                except queue.Empty:
                    server.issued += 1
                    if server.issue is not None:
                        answer = server.issue(seen)
                    else:
                        answer = Answer(body={"access_token": f"token-{server.issued}",
                                              "token_type": "Bearer", "expires_in": 3600})
                time.sleep(answer.delay)
                body = answer.body
                if isinstance(body, (dict, list)):
                    data = json.dumps(body).encode()
                    ctype = "application/json"
                else:
                    data = body.encode() if isinstance(body, str) else (body or b"")
                    ctype = "text/plain"
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/oauth2/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def answer(self, **kwargs: Any) -> None:
        self.answers.put(Answer(**kwargs))

    def posts(self) -> List[Seen]:
        return [r for r in self.requests if r.method == "POST"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch) -> None:
    """urllib honours proxy variables: none may send a test request away from 127.0.0.1."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server() -> Iterator[TokenServer]:
    s = TokenServer()
    yield s
    s.close()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def provider(server: TokenServer, clock: Optional[Clock] = None, **kwargs: Any):
    kwargs.setdefault("scope", "kafka.read")
    return ClientCredentialsTokenProvider(server.url, CLIENT_ID, SECRET,
                                          clock=clock or Clock(), **kwargs)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def failure(p: ClientCredentialsTokenProvider) -> str:
    with pytest.raises(TokenError) as info:
        p.token()
    text = str(info.value)
    assert "\n" not in text and SECRET not in text
    return text


# --- the client-credentials request ---------------------------------------------------------


def test_token_request_is_a_client_credentials_grant_with_basic_auth(server) -> None:
    """POST, form-encoded grant_type and scope, client id and secret in HTTP Basic, JSON back."""
    assert provider(server).token() == "token-1"
    [seen] = server.requests
    assert seen.method == "POST" and seen.path == "/oauth2/token"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"].startswith("klag-collector/")
    assert seen.headers["Authorization"] == basic(CLIENT_ID, SECRET)
    assert seen.form == {"grant_type": ["client_credentials"], "scope": ["kafka.read"]}


def test_no_scope_sends_only_the_grant_type(server) -> None:
    provider(server, scope=None).token()
    assert server.requests[0].form == {"grant_type": ["client_credentials"]}


def test_urlencoded_credentials(server) -> None:
    """sasl.oauthbearer.header.urlencode: id and secret form-encoded first (RFC 6749 §2.3.1)."""
    p = ClientCredentialsTokenProvider(server.url, "my client", "p@ss:w/rd", clock=Clock(),
                                       urlencode_credentials=True)
    p.token()
    assert server.requests[0].headers["Authorization"] == basic("my+client", "p%40ss%3Aw%2Frd")


def test_client_id_with_a_colon_needs_urlencoding(server) -> None:
    with pytest.raises(ValueError, match="HTTP Basic"):
        ClientCredentialsTokenProvider(server.url, "a:b", SECRET)


# --- caching and refresh ---------------------------------------------------------------------


def test_token_is_cached(server) -> None:
    """Two token() calls, one HTTP request."""
    p = provider(server)
    assert p.token() == p.token() == "token-1"
    assert len(server.requests) == 1


def test_token_is_refreshed_before_it_expires(server) -> None:
    """expires_in 100 s: kept for 70 s (30 s before expiry), then fetched again."""
    clock = Clock()
    p = provider(server, clock)
    server.answer(body={"access_token": "first", "expires_in": 100})
    server.answer(body={"access_token": "second", "expires_in": 100})
    assert p.token() == "first"
    clock.now += 69
    assert p.token() == "first" and len(server.requests) == 1
    clock.now += 2
    assert p.token() == "second" and len(server.requests) == 2


@pytest.mark.parametrize("lifetime, delay", [(3600, 2880), (100, 70), (40, 20), (10, 5)])
def test_refresh_delay(lifetime: float, delay: float) -> None:
    """80% of the lifetime, but at least 30 s before expiry, and never before half of it."""
    assert refresh_delay(lifetime) == delay


def test_expires_in_as_a_string(server) -> None:
    clock = Clock()
    p = provider(server, clock)
    server.answer(body={"access_token": "a", "expires_in": "100"})
    p.token()
    clock.now += 69
    p.token()
    assert len(server.requests) == 1


def test_lifetime_from_the_jwt_when_expires_in_is_missing(server) -> None:
    """Without expires_in, a JWT access token's exp claim says how long it lives."""
    clock = Clock()
    p = provider(server, clock)

    def jwt(claims: dict) -> str:
        part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
        return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"

    token = jwt({"sub": "x", "exp": clock.now + 1000})
    server.answer(body={"access_token": token})
    assert p.token() == token
    clock.now += 799  # refresh at 80% of 1000 s
    assert p.token() == token and len(server.requests) == 1
    clock.now += 2
    p.token()
    assert len(server.requests) == 2


def test_opaque_token_without_expires_in_is_kept_a_minute(server) -> None:
    clock = Clock()
    p = provider(server, clock)
    server.answer(body={"access_token": "opaque"})
    p.token()
    clock.now += 29  # 60 s lifetime: refreshed after 30 s (half of it)
    p.token()
    assert len(server.requests) == 1
    clock.now += 2
    p.token()
    assert len(server.requests) == 2


def test_failed_refresh_keeps_the_valid_token(server, caplog) -> None:
    """The endpoint failing at refresh time: the current token is used until it expires."""
    clock = Clock()
    p = provider(server, clock)
    server.answer(body={"access_token": "first", "expires_in": 100})
    assert p.token() == "first"
    clock.now += 80
    server.answer(status=503, body="down")
    assert p.token() == "first"
    assert "HTTP 503" in caplog.text and "keeping the current token" in caplog.text
    clock.now += 9  # no new request for 10 s after a failure
    assert p.token() == "first" and len(server.requests) == 2
    clock.now += 12  # expired now
    server.answer(status=503, body="down")
    assert "HTTP 503" in failure(p)
    assert "HTTP 503" in failure(p)  # the same failure, without asking the endpoint again
    assert len(server.requests) == 3
    clock.now += 10
    assert p.token() == "token-1"  # the endpoint is back


def test_failures_are_not_retried_at_once(server) -> None:
    """kafka-python reconnects quickly: after a failure the endpoint is left alone for 10 s."""
    clock = Clock()
    p = provider(server, clock)
    server.answer(status=401, body={"error": "invalid_client"})
    first = failure(p)
    clock.now += 9.9
    assert failure(p) == first
    assert len(server.requests) == 1
    clock.now += 0.1
    assert p.token() == "token-1" and len(server.requests) == 2


def test_concurrent_callers_share_one_request(server) -> None:
    """token() from many threads at once (kafka-python IO threads): one HTTP request."""
    p = provider(server)
    server.answer(body={"access_token": "shared", "expires_in": 3600}, delay=0.3)
    results: List[str] = []
    threads = [threading.Thread(target=lambda: results.append(p.token())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["shared"] * 8
    assert len(server.requests) == 1


# --- errors: one line, no secret, no token -----------------------------------------------------


def test_http_401_names_the_oauth_error(server) -> None:
    server.answer(status=401, body={"error": "invalid_client",
                                    "error_description": "Client authentication failed"})
    text = failure(provider(server))
    assert text == (f"OAuth token request to {server.url} failed: HTTP 401 "
                    "(invalid_client: Client authentication failed)")


def test_an_error_description_echoing_the_secret_is_masked(server) -> None:
    server.answer(status=400, body={"error": "invalid_request",
                                    "error_description": f"bad secret {SECRET}\nline two"})
    assert "bad secret *** line two" in failure(provider(server))


def test_http_error_without_an_oauth_body(server) -> None:
    server.answer(status=500, body="<html>oops</html>")
    assert failure(provider(server)).endswith("failed: HTTP 500")


def test_json_without_access_token(server) -> None:
    server.answer(body={"token_type": "Bearer", "expires_in": 3600})
    assert failure(provider(server)).endswith("the response has no access_token")


def test_response_that_is_not_json(server) -> None:
    server.answer(body="access_token=abc")
    assert failure(provider(server)).endswith("the response is not JSON")


@pytest.mark.parametrize("body, reason", [
    ([1, 2], "not a JSON object"),
    ({"access_token": ""}, "no access_token"),
    ({"access_token": 42}, "no access_token"),
    ({"access_token": "has space"}, "characters a bearer token cannot have"),
    ({"access_token": "ok", "expires_in": -5}, "not a positive number"),
    ({"access_token": "ok", "expires_in": "soon"}, "not a positive number"),
    ({"access_token": "ok", "expires_in": True}, "not a positive number"),
])
def test_malformed_token_responses(server, body: Any, reason: str) -> None:
    server.answer(body=body)
    text = failure(provider(server))
    assert reason in text and "has space" not in text


def test_redirect_is_not_followed(server) -> None:
    """Following it would send the Basic credentials to wherever the Location says."""
    server.answer(status=302, body="", headers={"Location": "/elsewhere"})
    assert "HTTP 302 redirect, not followed" in failure(provider(server))
    assert [r.path for r in server.requests] == ["/oauth2/token"]


def test_timeout(server) -> None:
    server.answer(body={"access_token": "late"}, delay=1.0)
    assert failure(provider(server, timeout=0.2)).endswith("failed: timed out")


def test_connection_refused(server) -> None:
    url = server.url
    server.close()
    p = ClientCredentialsTokenProvider(url, CLIENT_ID, SECRET)
    assert "Connection refused" in failure(p)


def test_url_query_is_not_shown(server) -> None:
    """A query string may carry secrets of its own; messages and reprs leave it out."""
    p = ClientCredentialsTokenProvider(server.url + "?api_key=hidden", CLIENT_ID, SECRET)
    server.answer(status=403, body="")
    assert "hidden" not in failure(p) and "hidden" not in repr(p)
    assert server.requests[0].path == "/oauth2/token?api_key=hidden"


@pytest.mark.parametrize("url", ["ftp://idp/token", "https://", "idp/token",
                                 "https://user:pw@idp/token", "https://idp:99999/token"])
def test_bad_token_urls(url: str) -> None:
    with pytest.raises(ValueError) as info:
        ClientCredentialsTokenProvider(url, CLIENT_ID, SECRET)
    assert "pw" not in str(info.value)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("oauth-certs"), "unused")


@pytest.fixture
def tls_server(certs) -> Iterator[TokenServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.broker_keystore)
    s = TokenServer(tls=context)
    yield s
    s.close()


def test_https_with_ca_location(tls_server, certs) -> None:
    """https.ca.location: the endpoint's certificate verifies against the given CA."""
    p = ClientCredentialsTokenProvider(tls_server.url, CLIENT_ID, SECRET,
                                       ca_location=str(certs.ca))
    assert p.token() == "token-1"
    capath = ClientCredentialsTokenProvider(tls_server.url, CLIENT_ID, SECRET,
                                            ca_location=str(certs.ca.parent))
    assert capath.ca_location == str(certs.ca.parent)


def test_https_with_an_untrusted_certificate(tls_server, certs) -> None:
    p = ClientCredentialsTokenProvider(tls_server.url, CLIENT_ID, SECRET,
                                       ca_location=str(certs.other_ca))
    assert "TLS certificate verification failed" in failure(p)
    assert tls_server.posts() == []


# --- what kafka-python sees ------------------------------------------------------------------


def test_provider_plugs_into_kafka_pythons_oauthbearer(server) -> None:
    """kafka-python's SASL mechanism accepts it and sends the token and the extensions."""
    p = provider(server, extensions={"logicalCluster": "lkc-1", "identityPoolId": "pool-1"})
    assert isinstance(p, AbstractTokenProvider)
    mechanism = SaslMechanismOAuth(sasl_oauth_token_provider=p)
    assert mechanism.auth_bytes() == (
        b"n,,\x01auth=Bearer token-1\x01logicalCluster=lkc-1\x01identityPoolId=pool-1\x01\x01")


def test_repr_and_equality_hide_the_secret(server) -> None:
    p = provider(server)
    q = provider(server)
    assert SECRET not in repr(p) and SECRET not in str(p)
    assert "client_secret='***'" in repr(p) and CLIENT_ID in repr(p)
    assert p == q and hash(p) == hash(q)
    assert p != ClientCredentialsTokenProvider(server.url, CLIENT_ID, "other", scope="kafka.read")


def test_secret_and_debug_tokens_are_masked_in_logs(server) -> None:
    """The client secret always, and tokens while kafka-python logs SASL bytes (debug)."""
    import logging

    provider(server)
    assert logs.redact(f"x {SECRET} y") == "x *** y"
    connection_log = logging.getLogger("kafka.net.connection")
    level = connection_log.level
    try:
        connection_log.setLevel(logging.INFO)
        server.answer(body={"access_token": "info-token-xyz", "expires_in": 60})
        provider(server).token()
        connection_log.setLevel(logging.DEBUG)
        server.answer(body={"access_token": "debug-token-xyz", "expires_in": 60})
        provider(server).token()
    finally:
        connection_log.setLevel(level)
    assert logs.redact("Bearer info-token-xyz") == "Bearer info-token-xyz"  # not logged at info
    assert logs.redact("Bearer debug-token-xyz") == "Bearer ***"


@pytest.mark.parametrize("extensions, fragment", [
    ({"auth": "x"}, '"auth" is reserved'),
    ({"bad-key": "x"}, "letters only"),
    ({"k": "a\x01b"}, "printable ASCII"),
])
def test_bad_extensions(extensions: Dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_extensions(extensions)


# --- unsecured JWT -----------------------------------------------------------------------------


def _claims(token: str) -> Tuple[dict, dict, str]:
    head, body, signature = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    return decode(head), decode(body), signature


def test_unsecured_jwt() -> None:
    """librdkafka's unsecure.jwt: alg none, principal claim, iat/exp, scope list, no signature."""
    clock = Clock(1000.4)
    p = UnsecuredJwtTokenProvider("admin", scope=("a", "b"), life_seconds=600,
                                  extensions={"traceId": "123"}, clock=clock)
    token = p.token()
    head, claims, signature = _claims(token)
    assert head == {"alg": "none"} and signature == ""
    assert claims == {"sub": "admin", "iat": 1000, "exp": 1600, "scope": ["a", "b"]}
    assert p.extensions() == {"traceId": "123"}
    clock.now += 300
    assert p.token() == token  # cached
    clock.now += 200
    assert p.token() != token


def test_unsecured_jwt_claim_names() -> None:
    p = UnsecuredJwtTokenProvider("svc", principal_claim="azp", scope_claim="roles",
                                  scope=("r",), clock=Clock(0))
    assert _claims(p.token())[1] == {"azp": "svc", "iat": 0, "exp": 3600, "roles": ["r"]}
    assert "UnsecuredJwtTokenProvider(principal='svc'" in repr(p)


# --- a real broker: OIDC (JWKS-validated) and unsecured JWT ------------------------------------
#
# The broker's OAUTH listener validates RS256 tokens against the JWKS this module's token server
# publishes (Kafka's OAuthBearerValidatorCallbackHandler); its UNSECURED listener takes Kafka's
# default unsecured validator. Kafka 4 fetches only URLs allowed by the JVM system property
# org.apache.kafka.sasl.oauthbearer.allowed.urls, passed through JAVA_TOOL_OPTIONS. Topics and
# commits go in through the PLAINTEXT listener; the exporter's KafkaSource reads through the
# OAUTHBEARER ones, with the config file's properties translated as in production.

OAUTH_LOGIN = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
OAUTH_VALIDATOR = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
)
BROKER_CLIENT, BROKER_SECRET = "klag-reader", f"idp-{time.time_ns()}"
AUDIENCE, ISSUER = "klag-test-cluster", "https://idp.klag.invalid"


class Idp:
    """The token server as an identity provider: RS256 JWTs for one client, and their JWKS."""

    def __init__(self, server: TokenServer) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.server = server
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        as_b64 = lambda n: _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))
        server.jwks = {"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                                 "n": as_b64(numbers.n), "e": as_b64(numbers.e)}]}
        server.issue = self.issue
        self.url = server.url.replace("/oauth2/token", "/jwks")

    def jwt(self, claims: dict) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        head = _b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = self.key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(signature)}"

    def issue(self, seen: Seen) -> Answer:
        if seen.headers.get("Authorization") != basic(BROKER_CLIENT, BROKER_SECRET):
            return Answer(status=401, body={"error": "invalid_client"})
        now = int(time.time())
        token = self.jwt({"sub": BROKER_CLIENT, "aud": AUDIENCE, "iss": ISSUER,
                          "iat": now, "exp": now + 300,
                          "scope": seen.form.get("scope", [""])[0]})
        return Answer(body={"access_token": token, "token_type": "Bearer", "expires_in": 300})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class OAuthCluster:
    broker: Any
    idp: Idp
    topic: str
    group: str


@pytest.fixture(scope="module")
def oauth_cluster(tmp_path_factory) -> Iterator[OAuthCluster]:
    import os

    from kafka import KafkaAdminClient, TopicPartition

    from kafkahelp import commit, create_topic, produce
    from devtools.localkafka import Listener, LocalBroker

    server = TokenServer()
    idp = Idp(server)
    props = {
        "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.oauth.oauthbearer.sasl.jaas.config": f"{OAUTH_LOGIN} required;",
        "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class": OAUTH_VALIDATOR,
        "listener.name.oauth.oauthbearer.sasl.oauthbearer.jwks.endpoint.url": idp.url,
        "sasl.oauthbearer.jwks.endpoint.url": idp.url,
        "sasl.oauthbearer.expected.audience": AUDIENCE,
        "sasl.oauthbearer.expected.issuer": ISSUER,
        "listener.name.unsecured.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.unsecured.oauthbearer.sasl.jaas.config":
            f'{OAUTH_LOGIN} required unsecuredLoginStringClaim_sub="broker";',
    }
    saved = os.environ.get("JAVA_TOOL_OPTIONS")
    os.environ["JAVA_TOOL_OPTIONS"] = (
        f"{saved or ''} -Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={idp.url}").strip()
    broker = LocalBroker(tmp_path_factory.mktemp("oauth-kafka"), extra_properties=props,
                         extra_listeners=[Listener("OAUTH", "SASL_PLAINTEXT"),
                                          Listener("UNSECURED", "SASL_PLAINTEXT")])
    try:
        broker.start(timeout=120)
    finally:
        if saved is None:
            os.environ.pop("JAVA_TOOL_OPTIONS", None)
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = saved
    try:
        suffix = time.time_ns()
        topic, group = f"klag-oauth-{suffix}", f"klag-oauth-g-{suffix}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
        try:
            create_topic(admin, topic, 1)
            produce(broker.bootstrap, topic, 0, [int(time.time() * 1000) - 5000 + i
                                                 for i in range(5)])
            commit(admin, group, {TopicPartition(topic, 0): 2})
        finally:
            admin.close()
        yield OAuthCluster(broker, idp, topic, group)
    finally:
        broker.stop()
        server.close()


@pytest.fixture(scope="module")
def kafka(oauth_cluster):
    """These tests need only their own broker, not the session's."""
    return oauth_cluster.broker


def _read_through(cluster: OAuthCluster, listener: str, properties: Dict[str, str],
                  timeout: float = 15.0):
    """What the exporter's KafkaSource reads through *listener* with these properties."""
    from klag_collector.config import Performance, parse_config
    from klag_collector.kafka_source import KafkaSource

    lines = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in properties.items())
    text = (f'[[clusters]]\nname = "c"\n'
            f'bootstrap_servers = "{cluster.broker.listener_bootstrap(listener)}"\n'
            f"[clusters.consumer_properties]\n{lines}")
    config = parse_config(text, "oauth.toml", "toml").clusters[0]
    source = KafkaSource(config, Performance(kafka_timeout=timeout))
    try:
        return source.read(time.time()), config
    finally:
        source.reset()


def _oidc(cluster: OAuthCluster, secret: str = BROKER_SECRET) -> Dict[str, str]:
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": cluster.idp.server.url,
            "sasl.oauthbearer.client.id": BROKER_CLIENT,
            "sasl.oauthbearer.client.secret": secret,
            "sasl.oauthbearer.scope": "kafka"}


@pytest.mark.broker
def test_oidc_on_a_real_broker(oauth_cluster) -> None:
    """Client credentials from the IdP, a JWT the broker validates against the JWKS: lag read."""
    data, config = _read_through(oauth_cluster, "OAUTH", _oidc(oauth_cluster))
    from kafka import TopicPartition

    assert data.committed[oauth_cluster.group] == {TopicPartition(oauth_cluster.topic, 0): 2}
    assert data.latest[TopicPartition(oauth_cluster.topic, 0)] == 5
    posts = oauth_cluster.idp.server.posts()
    assert posts and all(p.form == {"grant_type": ["client_credentials"], "scope": ["kafka"]}
                         for p in posts)
    # One token for the admin client and every consumer: the provider caches it.
    assert len([p for p in posts
                if p.headers["Authorization"] == basic(BROKER_CLIENT, BROKER_SECRET)]) == 1


@pytest.mark.broker
def test_oidc_with_a_wrong_secret_on_a_real_broker(oauth_cluster) -> None:
    """The IdP refuses the client: the read fails, and nothing says the secret."""
    wrong = f"wrong-{time.time_ns()}"
    with pytest.raises(Exception) as info:
        _read_through(oauth_cluster, "OAUTH", _oidc(oauth_cluster, wrong), timeout=5.0)
    assert wrong not in str(info.value) and BROKER_SECRET not in str(info.value)
    # kafka-python reconnected several times; the IdP was asked once.
    refused = [p for p in oauth_cluster.idp.server.posts()
               if p.headers["Authorization"] == basic(BROKER_CLIENT, wrong)]
    assert len(refused) == 1


@pytest.mark.broker
def test_a_token_the_broker_cannot_verify_is_refused(oauth_cluster) -> None:
    """The broker really checks the signature: a token signed by another key is refused."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    idp = oauth_cluster.idp
    key, idp.key = idp.key, rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        with pytest.raises(Exception) as info:
            _read_through(oauth_cluster, "OAUTH", _oidc(oauth_cluster), timeout=5.0)
    finally:
        idp.key = key
    # The broker's answer ({"status":"invalid_token"}) often races with its closing the
    # socket, which kafka-python then reports alone (see kafka_clients).
    text = str(info.value)
    assert ("SASL OAUTHBEARER authentication failed" in text and "invalid_token" in text) or (
        "after a refused SASL OAUTHBEARER token" in text), text


@pytest.mark.broker
def test_unsecured_jwt_on_a_real_broker(oauth_cluster) -> None:
    """librdkafka's enable.sasl.oauthbearer.unsecure.jwt against Kafka's default validator."""
    from kafka import TopicPartition

    data, _ = _read_through(oauth_cluster, "UNSECURED", {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
        "enable.sasl.oauthbearer.unsecure.jwt": "true",
        "sasl.oauthbearer.config": "principal=klag-reader lifeSeconds=600",
    })
    assert data.committed[oauth_cluster.group] == {TopicPartition(oauth_cluster.topic, 0): 2}
