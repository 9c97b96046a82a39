"""Building kafka-python clients: no IO thread left behind, and a failure that says why.

kafka-python 3.0.12 clients start their IO thread in the constructor and then bootstrap.
When the bootstrap fails, the constructor raises ``KafkaTimeoutError("Unable to bootstrap
from ...")`` and leaves that IO thread running, one more per failed attempt. The reason
(a refused password, a certificate that does not verify) is only logged, from the IO
thread. `build` closes what a failed constructor started, and, from the connection errors
kafka-python logged on that client's IO thread, raises a `ConnectError` naming the
authentication or TLS problem. Other failures are re-raised unchanged.

kafka-python drops a response that arrives together with the broker closing the socket
(``kafka/net/transport.py``, ``_read_from_sock``). A broker answers a failed SASL
authentication and then closes the connection, so the client usually sees only "socket
disconnected"; for a SASL cluster that is reported as a probable credential problem.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Deque, List, Mapping, Optional, Tuple, Type, TypeVar

from kafka.errors import (
    AuthorizationError,
    KafkaError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from . import logs
from .kafka_properties import SECRET_ARGS
from .oauth import TokenError

T = TypeVar("T")

# kafka-python logs connection failures at ERROR on these two loggers, from the IO thread.
_ERROR_LOGGERS = ("kafka.net.manager", "kafka.net.connection")
_MAX_THREADS = 256
_PER_THREAD = 16


class ConnectError(Exception):
    """A client could not connect to a cluster; the message says why, without secrets."""


class _ConnectionErrors(logging.Filter):
    """Keeps the last connection errors logged on each kafka-python IO thread. Drops nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._by_thread: "OrderedDict[int, Deque[Tuple[float, BaseException]]]" = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        error = next((a for a in reversed(args) if isinstance(a, BaseException)), None)
        if error is not None and record.levelno >= logging.ERROR and record.thread is not None:
            with self._lock:
                errors = self._by_thread.pop(record.thread, None) or deque(maxlen=_PER_THREAD)
                errors.append((record.created, error))
                self._by_thread[record.thread] = errors
                while len(self._by_thread) > _MAX_THREADS:
                    self._by_thread.popitem(last=False)
        return True

    def take(self, thread: Optional[int], since: float) -> List[BaseException]:
        """The errors logged on `thread` at or after `since` (wall clock), oldest first."""
        if thread is None:
            return []
        with self._lock:
            errors = self._by_thread.pop(thread, ())
        # A thread id can be reused: older entries belong to a client that is gone.
        return [e for at, e in errors if at >= since]


_recorder = _ConnectionErrors()
for _name in _ERROR_LOGGERS:
    logging.getLogger(_name).addFilter(_recorder)


def build(cls: Type[T], args: Mapping[str, Any]) -> T:
    """``cls(**args)`` (KafkaAdminClient or KafkaConsumer) that cleans up if it fails.

    Raises ConnectError when the failure is an authentication or TLS problem, else the
    constructor's own exception.
    """
    logs.hide_secrets(*(str(v) for k, v in args.items() if k in SECRET_ARGS and v))
    since = time.time()
    client = cls.__new__(cls)
    try:
        client.__init__(**args)  # type: ignore[misc]
    except Exception as exc:
        thread = _discard(client)
        reason = explain(_recorder.take(thread, since), args)
        if reason is None:
            raise
        servers = args.get("bootstrap_servers")
        where = ",".join(servers) if isinstance(servers, (list, tuple)) else str(servers)
        raise ConnectError(logs.redact(f"cannot connect to {where}: {reason}")) from exc
    return client


def _discard(client: Any) -> Optional[int]:
    """Stop what a failed constructor started; return its IO thread's id, if it had one."""
    net = client.__dict__.get("_net")
    thread = getattr(getattr(net, "_io_thread", None), "ident", None)
    for part, method in (("_metrics", "close"), ("_client", "close"), ("_net", "stop")):
        target = client.__dict__.get(part)
        if target is None:
            continue
        try:
            getattr(target, method)()
        except Exception:  # a half-built client may fail to close; it is dropped either way
            pass
    return thread


_SSL_NOISE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def _detail(error: BaseException) -> str:
    """The error's message without kafka-python's repeated class names or OpenSSL's source line."""
    # kafka-python's errors prefix str() with their class name; ssl.SSLError's args[0] is a number.
    text = str(error.args[0]) if isinstance(error, KafkaError) and error.args else str(error)
    text = re.sub(r"^(?:\[Error \d+\] )?(?:\w+Error: )+", "", text.strip())
    return _SSL_NOISE.sub("", text)


def explain(errors: List[BaseException], args: Mapping[str, Any]) -> Optional[str]:
    """What went wrong, from the connection errors of a failed bootstrap; None if not a security problem."""
    protocol = str(args.get("security_protocol", "PLAINTEXT"))
    mechanism = args.get("sasl_mechanism")
    user = args.get("sasl_plain_username")
    who = f' as "{user}"' if user and mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") else ""
    for error in errors:
        if isinstance(error, TokenError):
            return f"SASL OAUTHBEARER: {error}"
        if isinstance(error, SaslAuthenticationFailedError):
            return f"SASL {mechanism} authentication{who} failed: {_detail(error)}"
        if isinstance(error, UnsupportedSaslMechanismError):
            return f"SASL mechanism not enabled on this listener: {_detail(error)}"
        if isinstance(error, AuthorizationError):
            return f"not authorized: {_detail(error)}"
    texts = [_detail(e) for e in errors]
    for text in texts:
        lower = text.lower()
        if "certificate verify failed" in lower:
            detail = text[lower.index("certificate verify failed"):].rstrip(". ")
            if "mismatch" in lower or "not valid for" in lower:
                hint = ("the broker's certificate does not name the host in bootstrap_servers "
                        "(hostname verification is on; "
                        '"ssl.endpoint.identification.algorithm" = "" turns it off)')
            elif "expired" in lower or "not yet valid" in lower:
                hint = "the broker's certificate is outside its validity dates (or the clock is wrong)"
            else:
                hint = ("the broker's certificate is not signed by a CA in ssl.ca.location "
                        "(or the system's CAs when it is not set)")
            return f"TLS handshake failed ({detail}): {hint}"
        if any(alert in lower for alert in ("alert bad certificate", "certificate required",
                                             "alert unknown ca", "alert certificate unknown")):
            return (f"the broker refused the client's TLS certificate ({text}); mutual TLS needs "
                    "ssl.certificate.location and ssl.key.location with a certificate the "
                    "broker trusts")
    if "SSL" in protocol:
        for text in texts:
            if "PEM lib" in text or "KEY_VALUES_MISMATCH" in text:
                return (f"cannot load the client certificate and key ({text}): is ssl.key.password "
                        "right, and are ssl.certificate.location and ssl.key.location a matching "
                        "PEM certificate and key?")
        for text in texts:
            if "[SSL" in text:
                return f"TLS error: {text}"
    if protocol.startswith("SASL_") and any("socket disconnected" in t for t in texts):
        if mechanism == "OAUTHBEARER":
            return ("the broker closed the connection during setup, as it does after a refused "
                    "SASL OAUTHBEARER token: check the token's audience, issuer and scope and "
                    "the sasl.oauthbearer.* settings")
        return (f"the broker closed the connection during setup, as it does after a failed "
                f"SASL authentication: check sasl.username{' (' + str(user) + ')' if user else ''}, "
                f"sasl.password and sasl.mechanism ({mechanism})")
    return None
