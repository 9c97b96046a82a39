"""The exporter's HTTP/1.1 server side, for a handful of Prometheus servers among strangers.

twisted.web's own channel reads any request body (spooling one over 100 KB to a temp file),
answers ``Expect: 100-continue``, and keeps any number of connections open, each for as long
as it trickles a byte now and then. The exporter answers GET and HEAD only, so here:

- a request that announces a body (Content-Length above 0, chunked) or ``Expect:
  100-continue`` is answered 413 as soon as that header arrives and its connection closed;
  not a byte of the body is read;
- a request's headers are due within ``header_timeout`` of the connection opening or of the
  previous answer, else the connection is closed (an idle keep-alive connection too, as Go's
  net/http does when only a header timeout is set);
- at most ``max_connections`` are open: a newcomer at the cap takes the place of the oldest
  connection waiting for a request (one that never sent a request first), else of the oldest
  still being sent a long answer (web.py streams large bodies; a client reading slowly keeps
  its connection only while there is room), else is closed.
"""

from __future__ import annotations

import resource
from typing import Any, Dict, Iterable, NamedTuple, Optional, Protocol, TypeVar, cast

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server

from .scrape_gate import ScrapeGate


class HttpLimits(NamedTuple):
    """The site's bounds: ``[exporter]`` http_max_connections and http_header_timeout."""

    max_connections: int
    header_timeout: float


_REFUSAL_TEXT = b"request bodies are not accepted here\n"
# The whole answer to a request announcing a body; the connection is closed after it.
BODY_REFUSED = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n" % len(_REFUSAL_TEXT)
) + _REFUSAL_TEXT


class Waiting(Protocol):
    """What eviction looks at in a connection."""

    @property
    def awaiting_request(self) -> bool:
        """Waiting for a request's headers (none is being answered)."""

    @property
    def answered(self) -> int:
        """Requests answered on it so far."""

    @property
    def streaming(self) -> bool:
        """An answer's body is being written to it as the client takes it."""


W = TypeVar("W", bound=Waiting)


def eviction_victim(oldest_first: Iterable[W]) -> Optional[W]:
    """The connection a newcomer replaces at the cap, or None when every one is busy.

    The oldest that never sent a whole request (a slowloris, most likely), else the oldest
    idle one between requests, else the oldest being sent a body; one whose answer is still
    being made is never taken.
    """
    idle: Optional[W] = None
    sending: Optional[W] = None
    for connection in oldest_first:
        if connection.awaiting_request:
            if connection.answered == 0:
                return connection
            if idle is None:
                idle = connection
        elif connection.streaming and sending is None:
            sending = connection
    return idle if idle is not None else sending


def _close_now(transport: ITCPTransport) -> None:
    """Abort a connection and, on TCP, release its socket at once."""
    transport.abortConnection()
    # abortConnection closes the socket on the reactor's next turn; newcomers accepted in the
    # same turn, each evicting another connection, would hold more sockets than the cap. The
    # call abortConnection scheduled then finds it done: tcp.Connection.connectionLost allows
    # a second call.
    if isinstance(transport, tcp.Connection):
        transport.connectionLost(Failure(ConnectionAborted()))


# Bytes a connection hands the kernel in one send (Twisted's default is 128 KiB). Each send
# releases the GIL, and the reactor waits up to a switch interval to get it back while a
# worker thread renders: a 400 KB gzip body went out in four sends, and a scrape during a
# render took p50 1.9 ms; in one send, 1.1 ms.
SEND_LIMIT = 1 << 20


class GuardedChannel(http.HTTPChannel):
    """An HTTPChannel that refuses request bodies and wants each request's headers on time."""

    # Set by Site.buildProtocol.
    site: "GuardedSite"

    def __init__(self) -> None:
        super().__init__()
        self.awaiting_request = True
        self.answered = 0
        self.streaming = False
        # Refused, evicted or timed out: whatever else arrives is dropped unread.
        self._finished = False
        self._deadline: Optional[IDelayedCall] = None
        self._abort: Optional[IDelayedCall] = None
        self._holding = False

    def connectionMade(self) -> None:
        super().connectionMade()
        if isinstance(self.transport, tcp.Connection):
            self.transport.SEND_LIMIT = SEND_LIMIT
        self._await_request()

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        # Worker threads pause (scrape_gate) from the request's first bytes until the answer
        # made from them is written: the reactor writes it in its next turn, and the gate
        # opens as the turn after begins.
        if not self._holding:
            self._holding = True
            self.site.gate.answering()
            self.callLater(0, self._written_next_turn)
        super().dataReceived(data)

    def _written_next_turn(self) -> None:
        self.callLater(0, self._let_go)

    def _let_go(self) -> None:
        self._holding = False
        self.site.gate.answered()

    def headerReceived(self, line: bytes) -> bool:
        if not super().headerReceived(line):
            return False  # a bad header: twisted.web answered 400 and closes
        # Twisted has just set self.length from Content-Length or Transfer-Encoding (None
        # when chunked); it reads the body only after the last header, so refusing now
        # means nothing of it is read, spooled or answered with 100 Continue.
        expect = self.requests[-1].requestHeaders.getRawHeaders(b"expect") or []
        if self.length != 0 or any(value.lower() == b"100-continue" for value in expect):
            self._finish()
            self._transport.write(BODY_REFUSED)
            self.loseConnection()
            return False
        return True

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        self.awaiting_request = False
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        self.answered += 1
        # Before the base class, which may go straight on to a request already received.
        self._await_request()
        super().requestDone(request)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        self.streaming = True

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self.streaming = False

    def evict(self) -> None:
        """Close this connection now, to make room for a newcomer."""
        self._finish()
        _close_now(self._transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finish()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self.site.connection_lost(self)
        super().connectionLost(reason)

    @property
    def _transport(self) -> ITCPTransport:
        # A TCP (or UNIX, or TLS) connection's, all of which abortConnection().
        return cast(ITCPTransport, self.transport)

    def _await_request(self) -> None:
        self.awaiting_request = True
        self._cancel_deadline()
        self._deadline = self.callLater(self.site.limits.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._deadline = None
        self._finish()
        # An answer still queued is sent first; a client that does not read it is cut off.
        self.loseConnection()
        self._abort = self.callLater(self.abortTimeout, self._transport.abortConnection)

    def _finish(self) -> None:
        self._finished = True
        self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


class GuardedSite(server.Site):
    """A Site of GuardedChannels, never more than `limits.max_connections` of them open."""

    # twisted.web types this as its HTTP/2-capable wrapper of an HTTPChannel; HTTP/2 needs TLS
    # with ALPN, which the exporter does not serve, so the channel is used as it is.
    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(self, root: Any, limits: HttpLimits, gate: Optional[ScrapeGate] = None,
                 **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.limits = limits
        # Told when an answer is being made and sent, so that the workers it names wait.
        self.gate = gate if gate is not None else ScrapeGate()
        # Open channels, oldest first (a dict keeps insertion order).
        self._open: Dict[GuardedChannel, None] = {}

    @property
    def open_connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    def buildProtocol(self, addr: Any) -> Optional[GuardedChannel]:  # type: ignore[override]
        if len(self._open) >= self.limits.max_connections:
            victim = eviction_victim(self._open)
            if victim is None:
                return None  # the port closes the newcomer's socket at once
            self.connection_lost(victim)
            victim.evict()
        channel: GuardedChannel = super().buildProtocol(addr)
        self._open[channel] = None
        return channel

    def connection_lost(self, channel: GuardedChannel) -> None:
        """`channel` is closed, or about to be: it no longer counts."""
        self._open.pop(channel, None)


class FileLimit(NamedTuple):
    """This process's soft limit on open files, before and after raise_open_file_limit()."""

    before: int
    after: int


def raise_open_file_limit() -> FileLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit, so that the cap, not the fd table, binds.

    An unlimited hard limit (some BSDs) cannot be the soft one; the soft limit stays then.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or hard == resource.RLIM_INFINITY:
        return FileLimit(soft, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return FileLimit(soft, soft)
    return FileLimit(soft, hard)
