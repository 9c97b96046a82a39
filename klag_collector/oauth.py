"""SASL/OAUTHBEARER token providers for kafka-python (``sasl_oauth_token_provider``).

kafka-python 3.0.12 calls ``token()`` and ``extensions()`` of the provider
(``kafka.net.sasl.oauth.AbstractTokenProvider``) on its IO thread each time a connection
authenticates or re-authenticates, so one provider, shared by every client of a cluster, is
called from several threads. Both providers here cache their token under a lock.

``ClientCredentialsTokenProvider`` is librdkafka's ``sasl.oauthbearer.method = oidc``: the
OAuth 2.0 client-credentials grant (RFC 6749 §4.4) against a token endpoint, the client
authenticated with HTTP Basic (§2.3.1). ``UnsecuredJwtTokenProvider`` is librdkafka's
``enable.sasl.oauthbearer.unsecure.jwt``: an unsigned token naming a principal, which only a
broker using Kafka's default (unsecured, test-only) validator accepts.

Errors are ``TokenError``: one line, with neither the client secret nor any token in it.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import IO, Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

from kafka.net.sasl.oauth import AbstractTokenProvider

from klag_collector import __version__

log = logging.getLogger(__name__)

__all__ = [
    "ClientCredentialsTokenProvider",
    "TokenError",
    "UnsecuredJwtTokenProvider",
    "check_extensions",
]

# RFC 7628 §3.1: an extension key is letters only, "auth" is reserved; a value is printable
# ASCII, space, tab, CR or LF (never the \x01 that separates the fields of the SASL message).
_EXTENSION_KEY = re.compile(r"[A-Za-z]+")
_EXTENSION_VALUE = re.compile(r"[\x21-\x7e \t\r\n]*")
# RFC 6750 §2.1 b64token: what may follow "Bearer " in the SASL message.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_RESPONSE = 1 << 20  # a token response is a few KiB; more is not a token endpoint
_REFRESH_FRACTION = 0.8  # refresh once 80% of a token's lifetime has passed ...
_REFRESH_MARGIN = 30.0  # ... and at least 30 s before it expires, when the lifetime allows
_DEFAULT_LIFETIME = 60.0  # a token without expires_in (nor a JWT exp): fetch again after a minute
_DETAIL_LIMIT = 200


class TokenError(Exception):
    """No token could be had; the message says why, without the secret or any token."""


def check_extensions(extensions: Mapping[str, str]) -> Dict[str, str]:
    """The SASL extensions as a plain dict, or ValueError naming the bad key (never a value)."""
    checked: Dict[str, str] = {}
    for key, value in extensions.items():
        if not isinstance(key, str) or not _EXTENSION_KEY.fullmatch(key):
            raise ValueError(f'extension name "{key}" must be letters only (RFC 7628)')
        if key == "auth":
            raise ValueError('extension name "auth" is reserved (RFC 7628)')
        if not isinstance(value, str) or not _EXTENSION_VALUE.fullmatch(value):
            raise ValueError(f'the value of extension "{key}" must be printable ASCII (RFC 7628)')
        checked[key] = value
    return checked


def refresh_delay(lifetime: float) -> float:
    """Seconds after issue at which a token living *lifetime* seconds is replaced."""
    return max(min(_REFRESH_FRACTION * lifetime, lifetime - _REFRESH_MARGIN), lifetime / 2)


class _CachingProvider(AbstractTokenProvider):  # type: ignore[misc]  # kafka-python is untyped
    """A token fetched under a lock, reused until its refresh time, kept while still valid.

    After a failed fetch, the next one waits ``RETRY_AFTER`` seconds: kafka-python reconnects
    every second or faster, and an identity provider should not see a request each time.
    Meanwhile a still-valid token is returned, else the failure is raised again.
    """

    RETRY_AFTER = 10.0

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._failure: Optional[str] = None
        self._retry_at = 0.0
        self._extensions: Dict[str, str] = {}

    def extensions(self) -> Dict[str, str]:
        return dict(self._extensions)

    def __str__(self) -> str:
        return repr(self)

    def _settings(self) -> Tuple[Any, ...]:
        """What makes two providers of one class equal: all they were built with."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash(self._settings())

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            valid = self._token is not None and now < self._expires_at
            if self._failure is not None and now < self._retry_at:
                if valid:
                    return self._token  # type: ignore[return-value]
                raise TokenError(self._failure)
            try:
                token, lifetime = self._fetch(now)
            except TokenError as e:
                self._failure, self._retry_at = str(e), now + self.RETRY_AFTER
                if valid:
                    log.warning("%s; keeping the current token, valid for %.0f s more",
                                e, self._expires_at - now)
                    return self._token  # type: ignore[return-value]
                raise
            self._failure = None
            self._token = token
            self._refresh_at = now + refresh_delay(lifetime)
            self._expires_at = now + lifetime
            return token

    def _fetch(self, now: float) -> Tuple[str, float]:
        """A new token and its lifetime in seconds, or TokenError."""
        raise NotImplementedError


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect with the Authorization header: a secret sent elsewhere."""

    def redirect_request(  # noqa: D102
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
        headers: Message, newurl: str,
    ) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


def _opener(ca_location: Optional[str]) -> urllib.request.OpenerDirector:
    if ca_location is None:
        context = ssl.create_default_context()
    elif os.path.isdir(ca_location):
        context = ssl.create_default_context(capath=ca_location)
    else:
        context = ssl.create_default_context(cafile=ca_location)
    # Proxies from the environment (HTTPS_PROXY, NO_PROXY) apply, as with librdkafka's libcurl.
    return urllib.request.build_opener(
        _RefuseRedirects(), urllib.request.HTTPSHandler(context=context)
    )


def _shown_url(url: str) -> str:
    """The URL for messages: scheme, host, port and path, no query (which may carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_token_url(url: str) -> str:
    """*url* if it can be a token endpoint, else ValueError (without the URL's query)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; use the client id and secret properties")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return url.strip()


class ClientCredentialsTokenProvider(_CachingProvider):
    """An access token from an OAuth 2.0 token endpoint, by the client-credentials grant.

    The client authenticates with HTTP Basic (RFC 6749 §2.3.1). Like librdkafka and Java's
    client (``sasl.oauthbearer.header.urlencode = false``, its default), the id and secret go
    into the header as they are; ``urlencode_credentials`` form-encodes them first, as the RFC
    asks, for the identity providers that decode them.

    The token is kept until 80% of its ``expires_in`` has passed (at least 30 s before expiry
    when the lifetime allows), then replaced; if that fails, the current one is used until it
    expires. Without ``expires_in``, the token's JWT ``exp`` claim gives the lifetime.

    *opener* is anything with urllib's ``OpenerDirector.open(request, timeout=)``; by default
    urllib with the system's CAs (or *ca_location*), proxies from the environment, and
    redirects refused, since following one would send the credentials elsewhere.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: Optional[str] = None,
        extensions: Optional[Mapping[str, str]] = None,
        clock: Callable[[], float] = time.time,
        opener: Any = None,
        *,
        ca_location: Optional[str] = None,
        timeout: float = 10.0,
        urlencode_credentials: bool = False,
    ) -> None:
        super().__init__(clock)
        for name, value in (("client_id", client_id), ("client_secret", client_secret)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if not urlencode_credentials and ":" in client_id:
            # HTTP Basic splits at the first colon, so the server would read another id.
            raise ValueError("client_id contains ':', which HTTP Basic cannot carry unencoded")
        self.token_url = check_token_url(token_url)
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope or None
        self._extensions = check_extensions(extensions or {})
        self.ca_location = ca_location
        self.timeout = timeout
        self.urlencode_credentials = urlencode_credentials
        self._opener = opener if opener is not None else _opener(ca_location)
        self._where = _shown_url(self.token_url)
        _hide_in_logs(client_secret)

    def __repr__(self) -> str:
        scope = f", scope={self.scope!r}" if self.scope else ""
        ext = f", extensions={sorted(self._extensions)!r}" if self._extensions else ""
        return (f"ClientCredentialsTokenProvider(token_url={self._where!r}, "
                f"client_id={self.client_id!r}, client_secret='***'{scope}{ext})")

    def _settings(self) -> Tuple[Any, ...]:
        return (self.token_url, self.client_id, self._client_secret, self.scope,
                tuple(sorted(self._extensions.items())), self.ca_location, self.timeout,
                self.urlencode_credentials)

    def _fail(self, what: str) -> TokenError:
        return TokenError(_clean(f"OAuth token request to {self._where} failed: {what}",
                                 self._client_secret))

    def _request(self) -> urllib.request.Request:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        user, password = self.client_id, self._client_secret
        if self.urlencode_credentials:
            user = urllib.parse.quote_plus(user)
            password = urllib.parse.quote_plus(password)
        basic = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        return urllib.request.Request(
            self.token_url,
            data=urllib.parse.urlencode(form).encode("ascii"),
            method="POST",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": f"klag-collector/{__version__}",
            },
        )

    def _fetch(self, now: float) -> Tuple[str, float]:
        try:
            with self._opener.open(self._request(), timeout=self.timeout) as response:
                body = response.read(_MAX_RESPONSE + 1)
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                raise self._fail(f"HTTP {e.code} redirect, not followed (it would take the "
                                 "client credentials along); give the final URL") from None
            raise self._fail(f"HTTP {e.code}{_oauth_error(e)}") from None
        except urllib.error.URLError as e:
            raise self._fail(_reason(e.reason)) from None
        except (OSError, ValueError) as e:  # timeouts, resets, a bad URL, http.client errors
            raise self._fail(_reason(e)) from None
        if len(body) > _MAX_RESPONSE:
            raise self._fail("the response is larger than 1 MiB")
        try:
            answer = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._fail("the response is not JSON") from None
        if not isinstance(answer, dict):
            raise self._fail("the response is not a JSON object")
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._fail("the response has no access_token")
        if not _BEARER_TOKEN.fullmatch(token):
            raise self._fail("the access_token has characters a bearer token cannot have")
        _hide_in_logs(token, only_when_debugging=True)
        return token, self._lifetime(answer, token, now)

    def _lifetime(self, answer: Mapping[str, Any], token: str, now: float) -> float:
        expires_in = answer.get("expires_in")
        if expires_in is None:
            exp = _jwt_claims(token).get("exp")
            if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp > now:
                return float(exp - now)
            return _DEFAULT_LIFETIME
        if isinstance(expires_in, str):
            try:
                expires_in = float(expires_in.strip())
            except ValueError:
                pass
        if (isinstance(expires_in, bool) or not isinstance(expires_in, (int, float))
                or not math.isfinite(expires_in) or expires_in <= 0):
            raise self._fail("expires_in in the response is not a positive number of seconds")
        return float(expires_in)


class UnsecuredJwtTokenProvider(_CachingProvider):
    """An unsigned JWT (``"alg": "none"``, RFC 7515 appendix A.5) naming *principal*.

    librdkafka's ``enable.sasl.oauthbearer.unsecure.jwt`` with ``sasl.oauthbearer.config``;
    only for test brokers running Kafka's default unsecured OAUTHBEARER validator.
    """

    def __init__(
        self,
        principal: str,
        principal_claim: str = "sub",
        scope_claim: str = "scope",
        scope: Iterable[str] = (),
        life_seconds: int = 3600,
        extensions: Optional[Mapping[str, str]] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        if not principal:
            raise ValueError("principal must not be empty")
        if life_seconds < 1:
            raise ValueError("life_seconds must be at least 1")
        self.principal = principal
        self.principal_claim = principal_claim
        self.scope_claim = scope_claim
        self.scope = tuple(scope)
        self.life_seconds = int(life_seconds)
        self._extensions = check_extensions(extensions or {})

    def __repr__(self) -> str:
        return (f"UnsecuredJwtTokenProvider(principal={self.principal!r}, "
                f"principal_claim={self.principal_claim!r}, scope={list(self.scope)!r}, "
                f"life_seconds={self.life_seconds}, extensions={sorted(self._extensions)!r})")

    def _settings(self) -> Tuple[Any, ...]:
        return (self.principal, self.principal_claim, self.scope_claim, self.scope,
                self.life_seconds, tuple(sorted(self._extensions.items())))

    def _fetch(self, now: float) -> Tuple[str, float]:
        issued = int(now)
        claims: Dict[str, Any] = {
            self.principal_claim: self.principal,
            "iat": issued,
            "exp": issued + self.life_seconds,
        }
        if self.scope:
            claims[self.scope_claim] = list(self.scope)
        token = ".".join((_b64url({"alg": "none"}), _b64url(claims), ""))
        return token, float(issued + self.life_seconds - now)


def _b64url(value: Any) -> str:
    data = json.dumps(value, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt_claims(token: str) -> Dict[str, Any]:
    """The payload of a JWT, or {} when the token is not one (access tokens may be opaque)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _oauth_error(error: urllib.error.HTTPError) -> str:
    """`` (invalid_client: description)`` from an RFC 6749 §5.2 error body, if it has one."""
    try:
        body = json.loads(error.read(64 * 1024).decode("utf-8"))
    except Exception:  # any body that is not an OAuth error object: the status says enough
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ""
    detail = body["error"]
    description = body.get("error_description")
    if isinstance(description, str) and description.strip():
        detail += f": {description.strip()}"
    return f" ({detail})"


def _reason(error: Any) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed ({error.verify_message})"
    if isinstance(error, (TimeoutError,)) or "timed out" in str(error):
        return "timed out"
    if isinstance(error, BaseException):
        text = str(error) or type(error).__name__
        return re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    return str(error)


def _clean(text: str, secret: str) -> str:
    """One line, at most a few hundred characters, without *secret*."""
    text = " ".join(text.split())
    if secret:
        text = text.replace(secret, "***")
    if len(text) > _DETAIL_LIMIT + 100:
        text = text[: _DETAIL_LIMIT + 100] + "..."
    return text


def _hide_in_logs(value: str, only_when_debugging: bool = False) -> None:
    """Have klag-collector's log output mask *value* (kafka-python logs SASL bytes at debug).

    A token changes every refresh and the mask list only grows, so tokens are added only while
    kafka-python's connection logger would log them.
    """
    if only_when_debugging and not logging.getLogger("kafka.net.connection").isEnabledFor(
        logging.DEBUG
    ):
        return
    from klag_collector import logs

    logs.hide_secrets(value)
